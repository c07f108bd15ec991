"""Released weights: each format read from a synthetic file in its real naming and layout (random
weights), converted into gnrepro's ResNet and checked against the source model run in its own
input convention; malicious or mismatched files refused with one line; downloads and the cache."""
import io
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gnrepro.models.build import build_model
from gnrepro.errors import ConfigError
from gnrepro.weights import catalog, fetch, formats
from gnrepro.weights.load import load_released, resolve

IMAGENET_STD = [0.229, 0.224, 0.225]
C2_MEAN_BGR = np.array([102.9801, 115.9465, 122.7717])
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def gnrepro_model(compose_cfg, *overrides, classes=1000):
    cfg = compose_cfg("data=imagenet", "data.root=/unused", *overrides)
    return build_model(cfg, classes, 3, workers=1), cfg


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Every weight and statistic random (norm gammas away from 0, so no residual branch vanishes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.dim() == 4:  # conv: He-scaled, plus a per-filter offset that WS must remove
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2 / fan_in) ** 0.5 + 0.05 * torch.randn(t.shape[0], 1, 1, 1, generator=g))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("weight") and t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)


def calibrate_bn(module: nn.Module) -> None:
    """Running statistics measured on random images (as after training), so that a random BN network
    stays finite in eval mode."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        module.train()(F_normalize(rgb01(4, seed=7), [0.485, 0.456, 0.406], IMAGENET_STD))
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    module.eval()


def rgb01(n=2, size=64, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- Caffe2

def caffe2_blobs(depth: int, seed: int = 0) -> dict:
    """A Detectron GN ImageNet model's blobs, named and shaped as in R-50-GN.pkl, random values."""
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, out, inp, k):
        blobs[name + "_w"] = (rng.standard_normal((out, inp, k, k)) * (2 / (inp * k * k)) ** 0.5).astype(np.float32)
        blobs[name + "_w_momentum"] = np.zeros((out, inp, k, k), np.float32)  # solver state, to be skipped

    def gn(name, ch):
        blobs[name + "_gn_s"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)
        blobs[name + "_gn_b"] = (0.1 * rng.standard_normal(ch)).astype(np.float32)

    conv("conv1", 64, 3, 7)
    gn("conv1", 64)
    inp = 64
    for stage, blocks in zip(range(2, 6), DEPTHS[depth]):
        width = 64 * 2 ** (stage - 2)
        for b in range(blocks):
            p = f"res{stage}_{b}"
            conv(p + "_branch2a", width, inp, 1), gn(p + "_branch2a", width)
            conv(p + "_branch2b", width, width, 3), gn(p + "_branch2b", width)
            conv(p + "_branch2c", 4 * width, width, 1), gn(p + "_branch2c", 4 * width)
            if b == 0:
                conv(p + "_branch1", 4 * width, inp, 1), gn(p + "_branch1", 4 * width)
            inp = 4 * width
    blobs["pred_w"] = (0.01 * rng.standard_normal((1000, 2048))).astype(np.float32)
    blobs["pred_b"] = np.zeros(1000, np.float32)
    return blobs


def caffe2_forward(blobs: dict, depth: int, x: torch.Tensor) -> torch.Tensor:
    """The Caffe2 GN ResNet written from the blobs with torch.nn.functional, input BGR 0-255 minus
    the pixel mean; stride on the 3x3 conv (Detectron's STRIDE_1X1 False), GN G=32 eps 1e-5."""
    t = lambda name: torch.from_numpy(blobs[name])  # noqa: E731
    gn = lambda y, p: F.group_norm(y, 32, t(p + "_gn_s"), t(p + "_gn_b"), eps=1e-5)  # noqa: E731
    x = F.max_pool2d(F.relu(gn(F.conv2d(x, t("conv1_w"), stride=2, padding=3), "conv1")), 3, 2, 1)
    for stage, blocks in zip(range(2, 6), DEPTHS[depth]):
        for b in range(blocks):
            p, stride = f"res{stage}_{b}", 2 if (b == 0 and stage > 2) else 1
            y = F.relu(gn(F.conv2d(x, t(p + "_branch2a_w")), p + "_branch2a"))
            y = F.relu(gn(F.conv2d(y, t(p + "_branch2b_w"), stride=stride, padding=1), p + "_branch2b"))
            y = gn(F.conv2d(y, t(p + "_branch2c_w")), p + "_branch2c")
            short = gn(F.conv2d(x, t(p + "_branch1_w"), stride=stride), p + "_branch1") if b == 0 else x
            x = F.relu(y + short)
    return F.linear(x.mean((2, 3)), t("pred_w"), t("pred_b"))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_caffe2_gn_model_gives_the_caffe2_forward(compose_cfg, tmp_path, protocol):
    blobs = caffe2_blobs(50)
    path = tmp_path / "R-50-GN.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs, "cfg": "a yaml string"}, protocol=protocol))
    model, cfg = gnrepro_model(compose_cfg, "norm=gn")
    source = resolve(str(path), "auto", "plain")
    assert source.format == "caffe2"
    cfg.data.mean = source.convention.rgb_mean01  # what gnrepro.evaluate does
    info = load_released(model, source, cfg, skip_classifier=False)
    assert info["mean_offset"] < 1e-9

    x = rgb01()
    ours = model.eval()(F_normalize(x, cfg.data.mean, IMAGENET_STD))
    caffe2_input = 255 * x[:, [2, 1, 0]] - torch.tensor(C2_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
    ref = caffe2_forward(blobs, 50, caffe2_input)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def assert_close_to_scale(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    """Outputs equal up to float32 storage rounding, measured against the outputs' own scale (random
    50-layer networks give logits from 1e-3 to 1e3, so an element-wise tolerance is meaningless)."""
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale, f"max |difference| {err:.3g} vs output scale {scale:.3g}"


def F_normalize(x, mean, std):
    return (x - torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)) / torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)


@pytest.mark.slow  # a ResNet-101 built and loaded (~10 s of CPU); ResNet-50's Caffe2 loading stays in the quick loop
def test_caffe2_blob_names_cover_resnet101_and_flat_dicts(compose_cfg, tmp_path):
    blobs = caffe2_blobs(101)
    path = tmp_path / "R-101-GN.pkl"
    with open(path, "wb") as f:
        pickle.dump(blobs, f, protocol=2)  # no "blobs" key: a flat dict of arrays
    model, cfg = gnrepro_model(compose_cfg, "model=resnet101", "norm=gn")
    load_released(model, resolve(str(path), "auto", "plain"), cfg, skip_classifier=False)
    sd = model.state_dict()
    assert torch.equal(sd["layer3.22.bn2.weight"], torch.from_numpy(blobs["res4_22_branch2b_gn_s"]))
    assert torch.equal(sd["layer2.0.downsample.0.weight"], torch.from_numpy(blobs["res3_0_branch1_w"]))
    assert torch.equal(sd["fc.weight"], torch.from_numpy(blobs["pred_w"]))


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file when unpickled


def test_a_malicious_pickle_is_refused_and_does_not_run(tmp_path, compose_cfg):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50-GN.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil(marker)}}, protocol=2))
    with pytest.raises(ConfigError, match=r"refused to load .*global _?io\.open is not allowed"):
        resolve(str(path), "auto", "plain")
    assert not marker.exists()
    # the control: the same file through plain pickle does run, so the test can fail
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_a_malicious_torch_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    buf = io.BytesIO()
    torch.save({"conv1.weight": Evil(marker)}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match="refused to load"):
        resolve(str(path), "auto", "plain")
    assert not marker.exists()


def test_a_caffe2_bn_model_in_msra_layout_is_named_not_converted(compose_cfg, tmp_path):
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"res_conv1_bn_s": np.ones(64, np.float32), "conv1_w": np.ones((64, 3, 7, 7), np.float32)}))
    model, cfg = gnrepro_model(compose_cfg, "norm=gn")
    with pytest.raises(ConfigError, match="MSRA's layout"):
        load_released(model, resolve(str(path), "auto", "plain"), cfg, skip_classifier=False)


# ------------------------------------------------------------------------------------ torchvision

@pytest.mark.slow
@pytest.mark.parametrize("depth", [50, 101])
def test_torchvision_resnets_load_bitwise_and_give_identical_outputs(compose_cfg, tmp_path, depth):
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    randomize(tv)
    calibrate_bn(tv)
    path = tmp_path / f"resnet{depth}-00000000.pth"
    torch.save(tv.state_dict(), path)
    model, cfg = gnrepro_model(compose_cfg, f"model=resnet{depth}", "norm=bn")
    load_released(model, resolve(str(path), "auto", "plain"), cfg, skip_classifier=False)
    ours = model.state_dict()
    for key, value in tv.state_dict().items():
        assert torch.equal(ours[key], value), key
    x = F_normalize(rgb01(), cfg.data.mean, cfg.data.std)
    out = tv.eval()(x)
    assert torch.isfinite(out).all() and out.std() > 0
    assert torch.equal(model.eval()(x), out)


def test_a_wrong_architecture_is_one_line_naming_the_keys(compose_cfg, tmp_path):
    tv = torchvision.models.resnet101(weights=None)
    path = tmp_path / "resnet101.pth"
    torch.save(tv.state_dict(), path)
    model, cfg = gnrepro_model(compose_cfg, "model=resnet50", "norm=bn")
    with pytest.raises(ConfigError) as err:
        load_released(model, resolve(str(path), "auto", "plain"), cfg, skip_classifier=False)
    msg = str(err.value)
    assert "\n" not in msg and "unexpected keys: layer3.6." in msg
    gn_model, gn_cfg = gnrepro_model(compose_cfg, "model=resnet101", "norm=gn")
    with pytest.raises(ConfigError, match=r"unexpected keys: .*running_mean"):
        load_released(gn_model, resolve(str(path), "auto", "plain"), gn_cfg, skip_classifier=False)


def test_a_different_data_std_is_folded_exactly_into_conv1(compose_cfg, tmp_path):
    tv = torchvision.models.resnet50(weights=None)
    randomize(tv)
    calibrate_bn(tv)
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    model, cfg = gnrepro_model(compose_cfg, "norm=bn", "data.std=[0.5,0.25,0.2]")
    load_released(model, resolve(str(path), "auto", "plain"), cfg, skip_classifier=False)
    # float64 forward: the fold is exact in arithmetic; what remains is the float32 storage of the
    # folded conv1 (1e-7 relative), far below a wrong channel order or scale
    x = rgb01().double()
    assert_close_to_scale(model.double().eval()(F_normalize(x, cfg.data.mean, [0.5, 0.25, 0.2])),
                          tv.double().eval()(F_normalize(x, cfg.data.mean, IMAGENET_STD)))


# ------------------------------------------------------------------------------- WS authors' files

class OfficialWSConv(nn.Conv2d):
    """The WS authors' convolution: (w - mean) / (unbiased std + 1e-5) per output filter."""

    def forward(self, x):
        w = self.weight
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.view(w.size(0), -1).std(dim=1).view(-1, 1, 1, 1) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def official_ws_resnet50():
    model = torchvision.models.resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = OfficialWSConv
    randomize(model)
    return model


@pytest.mark.slow
def test_ws_authors_checkpoint_gives_the_official_ws_forward(compose_cfg, tmp_path):
    ref = official_ws_resnet50()
    path = tmp_path / "resnet50_gn_ws.pth.tar"
    torch.save({"epoch": 90, "arch": "l_resnet50",
                "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    model, cfg = gnrepro_model(compose_cfg, "norm=gn_ws")
    load_released(model, resolve(str(path), "ws_official", "ws"), cfg, skip_classifier=False)
    x = F_normalize(rgb01(), cfg.data.mean, cfg.data.std).double()
    assert_close_to_scale(model.double().eval()(x), ref.double().eval()(x))


def test_ws_reparameterization_is_exact_per_filter():
    w = torch.randn(8, 16, 3, 3, dtype=torch.float64) * 0.3 + 0.7
    new = formats.ws_official_to_gnrepro(w, eps=1e-5)
    ours = F.batch_norm(new.reshape(1, 8, -1), None, None, training=True, momentum=0.0, eps=1e-5).reshape_as(w)
    official = (w - w.mean((1, 2, 3), keepdim=True)) / (w.flatten(1).std(1).view(-1, 1, 1, 1) + 1e-5)
    torch.testing.assert_close(ours, official, rtol=1e-10, atol=1e-10)


def test_a_plain_torch_file_for_a_ws_model_needs_its_format(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ConfigError, match="init_format=ws_official"):
        resolve(str(path), "auto", "ws", key="init")


# ------------------------------------------------------------------------------ fetch and catalogue

def test_urls_are_downloaded_once_into_the_cache_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "resnet50-abc.pth"
    src.write_bytes(b"weights")
    prefix = fetch.sha256(src)[:8]
    got = fetch.fetch(src.as_uri(), prefix)
    assert got == fetch.cached_path(src.as_uri()) and got.read_bytes() == b"weights"
    assert got.parent.parent == tmp_path / "cache" and got.name == src.name
    src.unlink()  # the second use reads the cache only
    assert fetch.fetch(src.as_uri(), prefix) == got
    got.write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="does not match the published checksum"):
        fetch.fetch(src.as_uri(), prefix)


def test_without_network_one_line_names_the_url_and_the_manual_download(tmp_path, monkeypatch):
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # what download_url_to_file opens the URL with
    entry = catalog.CATALOG["tv-resnet50"]
    with pytest.raises(ConfigError) as err:
        resolve("tv-resnet50", "auto", "plain")
    msg = str(err.value)
    assert "\n" not in msg and entry.url in msg and "download it by hand to" in msg
    assert str(fetch.cached_path(entry.url)) in msg and fetch.cached_path(entry.url).name == "resnet50-0676ba61.pth"
    assert not list((tmp_path / "cache").rglob("*")), "no partial file or folder is left"


def test_a_wrong_checksum_download_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "x.pth"
    src.write_bytes(b"not the published file")
    with pytest.raises(ConfigError, match="published checksum"):
        fetch.fetch(src.as_uri(), "00000000")
    assert not list((tmp_path / "cache").rglob("*"))


def test_catalogue_entries_name_a_buildable_setting():
    for entry in catalog.CATALOG.values():
        assert entry.format in formats.FORMATS and entry.model in ("resnet50", "resnet101")
        assert entry.url.startswith("https://")
        if entry.sha256_prefix:
            assert entry.sha256_prefix in entry.url
    assert catalog.released("resnet50", "gn", "ws") == "R-50-GN-WS"
    assert catalog.released("resnet50", "bn", "plain") == "tv-resnet50"
    with pytest.raises(ConfigError, match="no released model"):
        catalog.released("resnet50", "ln", "plain")


# --------------------------------------------------------------------------------- frozen BN, names

def test_frozen_bn_is_a_fixed_affine_with_the_pretrained_statistics(compose_cfg):
    from gnrepro.runs.identity import run_name
    from gnrepro.layers.norm_registry import norm_tag

    cfg = compose_cfg("norm=frozen_bn")
    assert norm_tag(cfg.norm, cfg.conv) == "frozenbn" == norm_tag(compose_cfg("norm.frozen=true").norm, cfg.conv)
    model = build_model(cfg, 10, 3)
    assert not any("bn" in n for n, _ in model.named_parameters()), "BN* trains nothing"
    bn = model.layer1[0].bn1
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.normal_(), bn.bias.normal_()
    x = torch.randn(4, 64, 5, 5)
    ref = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-5)
    model.train()
    torch.testing.assert_close(bn(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="norm.frozen applies to norm=bn only"):
        from gnrepro.layers.norm_registry import build_norm
        build_norm("gn", 64, frozen=True)
    assert run_name("pets", "resnet50", cfg.norm, cfg.conv, 4, 1, 30, 0, "R-50-GN").endswith("_s0_from-R-50-GN")
    assert run_name("pets", "resnet50", cfg.norm, cfg.conv, 4, 1, 30, 0, None).endswith("_s0")
