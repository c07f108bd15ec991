"""Small batches without launch overhead (issue 23, item 3): ``compile=default`` and
``compile=reduce-overhead`` train per-worker BN (2 images x 8 workers on one device, running
statistics updated in place inside the graph), GN and GN+WS exactly as eager steps do, in NCHW and
channels_last. On the CPU reduce-overhead compiles like default (CUDA graphs are CUDA-only), so this
checks the compiled math and the in-graph buffer updates; that the CUDA graph is really used is
tests/engine/test_cuda.py's (marked ``cuda``, run by scripts/device_check.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gnrepro.engine.execution import Execution, compiler_available
from gnrepro.layers.convs import build_conv
from gnrepro.models.build import norm_factory
from gnrepro.models.resnet import Bottleneck

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not compiler_available(),
                                                   reason="torch.compile on the CPU builds C++ kernels: no g++/clang++")]


def small_net(norm: str, conv: str) -> nn.Module:
    """A ResNet stem and one bottleneck with its projection shortcut, from the project's factories."""
    torch.manual_seed(0)
    n = norm_factory({"name": norm, **({"groups": 8} if norm == "gn" else {})}, workers=8)
    c = build_conv(conv)
    return nn.Sequential(c(3, 16, 3, padding=1), n(16), nn.ReLU(), Bottleneck(16, 8, 2, n, c),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def train_steps(mode: str, norm: str, conv: str, channels_last: bool, steps: int = 3):
    ex = Execution(torch.device("cpu"), channels_last=channels_last, compile_mode=mode)
    model = ex.place(small_net(norm, conv))
    step = ex.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    outs = []
    for _ in range(steps):
        x = ex.images(torch.randn(16, 3, 8, 8, generator=g) * 2 + 0.5)  # 2 images x 8 workers
        y = torch.randint(0, 10, (16,), generator=g)
        logits = step(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        outs.append(logits.detach().clone())
    return outs, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
@pytest.mark.parametrize("norm,conv", [("bn", "plain"), ("gn", "plain"), ("gn", "ws")])
def test_compiled_steps_equal_eager_steps_with_their_running_statistics(norm, conv, mode, channels_last):
    """Three SGD steps: the logits of every step, the weights and every buffer (BN's running mean/var
    and num_batches_tracked, updated inside the compiled graph) equal eager's. Fails if a buffer update
    were lost or applied twice by the graph (the stats would drift by a momentum step) or if the
    per-worker split were compiled into other statistics."""
    torch.compiler.reset()
    eager_outs, eager_state = train_steps("off", norm, conv, channels_last)
    outs, state = train_steps(mode, norm, conv, channels_last)
    for got, want in zip(outs, eager_outs):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert state.keys() == eager_state.keys()
    for k in state:
        torch.testing.assert_close(state[k], eager_state[k], rtol=1e-4, atol=1e-4, msg=k)
    if norm == "bn":
        assert int(state["1.num_batches_tracked"]) == 3
        # The negative control: the running statistics did move (a step that skipped them would be seen).
        assert not torch.allclose(state["1.running_var"], torch.ones(16), atol=1e-3)
