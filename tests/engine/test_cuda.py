"""What only a GPU can show (marked ``cuda``: skipped without one, run first by scripts/device_check.py):
fp32 is IEEE float32 on tensor-core GPUs, and CUDA graphs (``compile=reduce-overhead``) train the
paper's norms at Figure 1's smallest batch with the same statistics as eager steps."""
import pytest
import torch
import torch.nn.functional as F

from gnrepro.engine.execution import Execution, set_float32_math
from gnrepro.layers.norm_registry import build_norm

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def conv_error(precision: str) -> float:
    """Largest relative error of a ResNet-sized 3x3 convolution against float64."""
    set_float32_math(precision)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(8, 64, 56, 56, device="cuda", generator=g)
    w = torch.randn(64, 64, 3, 3, device="cuda", generator=g)
    got = F.conv2d(x, w, padding=1).double()
    ref = F.conv2d(x.double(), w.double(), padding=1)
    set_float32_math("fp32")
    return ((got - ref).abs().max() / ref.abs().max()).item()


def test_fp32_convolutions_are_ieee_float32_and_tf32_is_not():
    fp32 = conv_error("fp32")
    assert fp32 < 1e-5, fp32  # float32's 24-bit mantissa over a 576-term sum
    if torch.cuda.get_device_capability() >= (8, 0):  # tensor-core TF32 exists from Ampere on
        assert conv_error("tf32") > 10 * fp32  # the negative control: a 10-bit mantissa shows


@pytest.mark.parametrize("norm,options", [("bn", {}), ("gn", {}), ("gn", {"ws": True})])
def test_cuda_graphs_train_each_norm_at_two_images_per_worker_like_eager(norm, options):
    """compile=reduce-overhead at 2 images x 8 workers on one device (per-worker BN updating its running
    statistics in place under CUDA graphs), GN and GN+WS: three steps give eager's outputs and buffers."""
    from gnrepro.layers.convs import build_conv

    def make():
        torch.manual_seed(0)
        conv = build_conv("ws" if options.get("ws") else "plain")(16, 32, 3, padding=1)
        layer = build_norm(norm, 32, workers=8) if norm == "bn" else build_norm(norm, 32, groups=8)
        return torch.nn.Sequential(conv, layer, torch.nn.ReLU()).cuda()

    x = torch.randn(16, 16, 8, 8, device="cuda")
    outs = {}
    for mode in ("off", "reduce-overhead"):
        model = make()
        step = Execution(torch.device("cuda"), compile_mode=mode).compile(model)
        for _ in range(3):
            out = step(x).clone()
        outs[mode] = (out, [b.clone() for b in model.buffers()])
    torch.testing.assert_close(outs["reduce-overhead"][0], outs["off"][0], rtol=1e-4, atol=1e-4)
    for graphed, eager in zip(outs["reduce-overhead"][1], outs["off"][1]):
        torch.testing.assert_close(graphed.float(), eager.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm,conv", [("bn", "plain"), ("gn", "plain"), ("gn", "ws")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reduce_overhead_really_runs_cuda_graphs_for_each_norm(norm, conv, channels_last):
    """Issue 23, item 3: a bottleneck net at 2 images x 8 workers trains under compile=reduce-overhead
    with CUDA graphs actually recorded (Inductor's counters: no "skipping cudagraphs", e.g. for BN's
    in-place running-statistics updates, and graphs recorded), and its logits and buffers equal eager's
    over three SGD steps. ``cudagraph_or_error`` turns any skip into a failure naming its reason."""
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from tests.engine.test_compile_small_batches import small_net

    def run(mode):
        ex = Execution(torch.device("cuda"), channels_last=channels_last, compile_mode=mode)
        model = ex.place(small_net(norm, conv))
        step = ex.compile(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator(device="cuda").manual_seed(1)
        logits = []
        for _ in range(3):
            x = ex.images(torch.randn(16, 3, 8, 8, device="cuda", generator=g))
            y = torch.randint(0, 10, (16,), device="cuda", generator=g)
            out = step(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            logits.append(out.detach().clone())
        return logits, {k: v.detach().clone() for k, v in model.state_dict().items()}

    torch.compiler.reset()
    counters.clear()
    eager = run("off")
    with inductor_config.patch({"triton.cudagraph_or_error": True}):
        graphed = run("reduce-overhead")
    assert counters["inductor"]["cudagraph_skips"] == 0
    assert counters["inductor"]["cudagraph_recorded_non_static_inputs"] > 0, "no CUDA graph was recorded"
    for got, want in zip(graphed[0], eager[0]):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    for k in eager[1]:
        torch.testing.assert_close(graphed[1][k].float(), eager[1][k].float(), rtol=1e-3, atol=1e-3, msg=k)


@pytest.mark.parametrize("name", ["bn", "gn", "ln", "in"])
def test_norms_keep_channels_last_on_a_real_gpu(name):
    """The fake-tensor stride tests (tests/layers/test_layouts.py) checked against the real kernels."""
    layer = build_norm(name, 64, workers=8).cuda() if name == "bn" else build_norm(name, 64).cuda()
    x = torch.randn(16, 64, 7, 7, device="cuda").contiguous(memory_format=torch.channels_last)
    out = layer.train()(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert not F.group_norm(x, 32).is_contiguous(memory_format=torch.channels_last)  # torch's kernel: NCHW


def test_fused_auto_picks_the_fused_sgd_kernel_on_cuda():
    from omegaconf import OmegaConf

    from gnrepro.engine.schedule import build_optimizer

    cfg = OmegaConf.create({"base_lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "fused": "auto"})
    opt, _ = build_optimizer(torch.nn.Linear(4, 3).cuda(), cfg, 32)
    assert opt.defaults["fused"] is True
