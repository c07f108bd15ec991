"""data.loader: pil (the default, unchanged), pil_uint8 (normalized on the device) and gpu (decode and
crops with torchvision.io). References: torchvision's own PIL transforms and float64 normalization;
what needs CUDA is skipped on a machine without it."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.io import read_file
from torchvision.transforms import v2

from conftest import data_config
from gnrepro.data import build_datasets, build_loaders, fake, limit_train
from gnrepro.data.device_feed import DeviceBatches, feed
from gnrepro.data.gpu_decode import EncodedImages, collate_encoded, decode, draw_box, eval_view, train_view
from gnrepro.data.sampling import StepBatchSampler

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
def needs_cuda(test):  # marked cuda as well: scripts/device_check.py runs them on a GPU machine
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (nvJPEG decode); run on a GPU machine")(test))
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the error on a machine without a CUDA GPU")


def data_cfg(root, loader, name="imagenet", crop=(32, 36, 32)):
    cfg = data_config(name, root)
    cfg.num_workers, cfg.loader = 0, loader
    cfg.train_crop, cfg.eval_resize, cfg.eval_crop = crop
    return cfg


def batches(root, loader, seed=0, name="imagenet"):
    """(first train batch, every val batch) as the trainer's loaders yield them, on the CPU."""
    cfg = data_cfg(root, loader, name)
    splits = build_datasets(cfg)
    limit_train(splits, cfg, 4)
    train, val = build_loaders(splits, cfg, StepBatchSampler(len(splits.train), 4, 1, seed=0), eval_batch=3,
                               device=torch.device("cpu"))
    torch.manual_seed(seed)  # the crop draws (num_workers=0: in this process)
    return next(iter(train)), list(val)


def test_the_default_is_pil_and_its_loader_is_untouched(tmp_path):
    for name in ("imagenet", "pets", "imagenette"):
        assert data_config(name).loader == "pil"
    fake.make_imagenet(tmp_path)
    cfg = data_cfg(tmp_path, "pil")
    splits = build_datasets(cfg)
    train, val = build_loaders(splits, cfg, StepBatchSampler(len(splits.train), 4, 1, seed=0), eval_batch=3)
    assert type(train) is DataLoader and type(val) is DataLoader  # the same objects as before data.loader existed
    loader = DataLoader(splits.val)
    assert feed(loader, cfg, torch.device("cpu")) is loader
    images, _ = next(iter(train))
    assert images.dtype == torch.float32


def test_pil_uint8_gives_the_pil_tensors(tmp_path):
    """Same seed, same images: the uint8 batch normalized on the device is the pil loader's batch
    to float32 rounding; both are checked against float64 normalization of the raw crops."""
    fake.make_imagenet(tmp_path)
    (pil_train, pil_targets), pil_val = batches(tmp_path, "pil")
    (u8_train, u8_targets), u8_val = batches(tmp_path, "pil_uint8")
    assert u8_train.dtype == torch.float32 and u8_train.shape == pil_train.shape == (4, 3, 32, 32)
    assert torch.equal(u8_targets, pil_targets)
    assert torch.allclose(u8_train, pil_train, atol=1e-6, rtol=0)
    assert len(u8_val) == len(pil_val) == 2
    for (a, ta), (b, tb) in zip(u8_val, pil_val):
        assert torch.equal(ta, tb) and torch.allclose(a, b, atol=1e-6, rtol=0)

    cfg = data_cfg(tmp_path, "pil_uint8")
    raw, _ = build_datasets(cfg).val.dataset[0]  # the uint8 crop the workers hand over
    assert raw.dtype == torch.uint8
    mean = torch.tensor(list(cfg.mean), dtype=torch.float64)[:, None, None]
    std = torch.tensor(list(cfg.std), dtype=torch.float64)[:, None, None]
    expected = (raw.double() / 255 - mean) / std
    assert torch.allclose(u8_val[0][0][0].double(), expected, atol=1e-5)
    assert not torch.allclose(u8_val[0][0][1].double(), expected, atol=1e-2)  # another image: the check can fail


def test_pil_uint8_batches_are_uint8_until_the_device(tmp_path):
    fake.make_imagenet(tmp_path)
    cfg = data_cfg(tmp_path, "pil_uint8")
    splits = build_datasets(cfg)
    train, _ = build_loaders(splits, cfg, StepBatchSampler(len(splits.train), 4, 1, seed=0), eval_batch=3)
    assert isinstance(train, DeviceBatches) and len(train) == len(splits.train) // 4
    images, _ = next(iter(train.loader))  # what the workers send
    assert images.dtype == torch.uint8


def jpegs(root, size=(64, 48), count=4):
    fake.make_imagenet(root, classes=1, train_per_class=count, val_per_class=1, size=size)
    return sorted(Path(root, "train").rglob("*.JPEG"))


@pytest.mark.parametrize("size", [(64, 48), (400, 300)])  # crops that upsample, and ones that downsample
def test_gpu_path_on_cpu_makes_the_pil_crops_from_the_same_box(tmp_path, size):
    """torchvision.io's decode (here on the CPU) is libjpeg's, and the tensor crop + antialiased
    resize lands within one grey level of PIL's for the same box; a box one pixel off does not."""
    torch.manual_seed(0)
    for path in jpegs(tmp_path, size):
        with Image.open(path) as image:
            box = draw_box(image)
            pil = image.convert("RGB")
        decoded = decode([read_file(str(path))], "cpu")[0]
        assert torch.equal(decoded, v2.functional.pil_to_tensor(pil))
        top, left, height, width, flip = box
        ref = v2.functional.pil_to_tensor(v2.functional.resized_crop(pil, top, left, height, width, [224, 224]))
        ref = ref.flip(-1) if flip else ref
        diff = (train_view(decoded, box, 224).int() - ref.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.05, (box, diff.max(), diff.float().mean())
        off = train_view(decoded, (top + 1, left, height, width, flip), 224)
        assert (off.int() - ref.int()).abs().float().mean() > 1
        ref_eval = v2.functional.pil_to_tensor(v2.functional.center_crop(v2.functional.resize(pil, [256]), [224, 224]))
        diff = (eval_view(decoded, 256, 224).int() - ref_eval.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.05


def box_problems(boxes, width, height) -> list:
    """The boxes that break RandomResizedCrop's ranges: inside the image, 8%-100% of its area, aspect
    3/4-4/3. No exception for full-height or full-width boxes (the old check let any full-height box
    through, whatever its width): torchvision's fallback after 10 failed draws is the center crop
    clamped to the ratio range, which for this 200x150 image (aspect 4/3, inside the range) is the
    whole image, itself of aspect 4/3. Rounding: w and h are each rounded, so w/h may miss the drawn
    ratio by a factor up to (1 + 0.5/w)/(1 - 0.5/h); 2/h covers it for every h >= 2 here."""
    bad = []
    for top, left, h, w, _ in boxes:
        inside = 0 <= top and 0 <= left and top + h <= height and left + w <= width
        area = 0.08 * width * height - 1 - w - h <= h * w <= width * height
        aspect = 3 / 4 * (1 - 2 / h) <= w / h <= 4 / 3 * (1 + 2 / h)
        if not (inside and area and aspect):
            bad.append((top, left, h, w))
    return bad


def boxes_of(path, draws=400):
    torch.manual_seed(0)
    with Image.open(path) as image:
        return [draw_box(image) for _ in range(draws)], image.size


def test_the_boxes_are_the_papers_augmentation(tmp_path):
    """Every box within the paper's ranges, and about half of the images flipped (400 draws: for
    p = 0.5, P(flips outside 161..239) < 1e-4, exact binomial)."""
    boxes, (width, height) = boxes_of(jpegs(tmp_path, (200, 150), count=1)[0])
    assert not box_problems(boxes, width, height)
    assert 160 < sum(box[4] for box in boxes) < 240


def test_the_box_check_rejects_an_aspect_range_of_1_2_to_2(tmp_path, monkeypatch):
    """Negative control: draw_box with the ratio range 1/2-2 fails the same check. Bound: a log-uniform
    ratio in [1/2, 2] falls outside [3/4, 4/3] with probability 1 - ln(16/9)/ln(4) = 0.58; even if
    most such draws did not fit the image and were redrawn, 400 boxes with none outside the range
    would need a per-box chance below 1% (0.99^400 = 0.018), and boxes of aspect 0.6 or 1.6 at a
    small area fit this image easily."""
    import gnrepro.data.gpu_decode as gpu_decode

    monkeypatch.setattr(gpu_decode, "RATIO", (1 / 2, 2.0))
    boxes, (width, height) = boxes_of(jpegs(tmp_path, (200, 150), count=1)[0])
    assert len(box_problems(boxes, width, height)) > 40  # a tenth of the boxes, at least


def test_the_box_check_rejects_full_height_boxes_of_any_width():
    """Negative control for the exception the old check made: a full-height box 2.5 times as wide
    as tall (what a broken fallback could return) is refused."""
    assert box_problems([(0, 0, 60, 150, 0)], 200, 60)


def test_gpu_dataset_reads_bytes_and_decodes_other_files_itself(tmp_path):
    path = jpegs(tmp_path, count=1)[0]
    png = tmp_path / "a_png_named.jpg"
    Image.open(path).save(png, format="PNG")
    data = EncodedImages([path, png], [3, 5], train=False)
    payload, box, label = data[0]
    assert payload.ndim == 1 and torch.equal(payload, read_file(str(path))) and label == 3
    assert box.tolist() == [0, 0, 0, 0, 0]
    payload, _, label = data[1]
    assert payload.ndim == 3 and payload.dtype == torch.uint8 and label == 5
    assert torch.equal(payload, v2.functional.pil_to_tensor(Image.open(png).convert("RGB")))


def test_gpu_loader_end_to_end_on_cpu(tmp_path):
    """The whole path with decode_jpeg on the CPU: normalized 32 px batches, the pil loader's labels,
    and validation images within one grey level of the pil loader's (the same center crop)."""
    fake.make_imagenet(tmp_path)
    (images, targets), val = batches(tmp_path, "gpu")
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and targets.dtype == torch.int64
    _, pil_val = batches(tmp_path, "pil")
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for (a, ta), (b, tb) in zip(val, pil_val):
        assert torch.equal(ta, tb)
        assert ((a - b) * std).abs().max() <= 1.01 / 255


@needs_cuda
def test_gpu_loader_on_cuda_matches_the_cpu_decode(tmp_path):
    fake.make_imagenet(tmp_path, size=(400, 300))
    cfg = data_cfg(tmp_path, "gpu", crop=(224, 256, 224))
    splits = build_datasets(cfg)
    loader = DataLoader(splits.val, batch_size=3, collate_fn=collate_encoded)
    on_gpu = list(feed(loader, cfg, torch.device("cuda"), train=False))
    on_cpu = list(feed(loader, cfg, torch.device("cpu"), train=False))
    for (a, ta), (b, tb) in zip(on_gpu, on_cpu):
        assert a.is_cuda and torch.equal(ta.cpu(), tb)
        assert (a.cpu() - b).abs().max() < 3 / 255 / 0.224  # nvJPEG's IDCT may differ from libjpeg's by a level or two


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_unknown_loader_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "data=imagenet", "data.root=/x", "data.loader=dali"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gnrepro: error: data.loader must be one of pil, pil_uint8, gpu, got 'dali'; set e.g. data.loader=pil"], proc.stderr


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
@needs_no_cuda
@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_gpu_loader_without_cuda_is_one_line(tmp_path, device):
    fake.make_imagenet(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "data=imagenet", f"data.root={tmp_path}",
                           "data.loader=gpu", f"device={device}"], cwd=tmp_path, capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("gnrepro: error: data.loader=gpu"), proc.stderr
    assert ("device=cpu" if device == "cpu" else "no CUDA GPU") in lines[0] and "data.loader=pil" in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_the_device_constants_are_copied_once_not_every_batch(monkeypatch):
    """A per-batch copy of mean/std is a small pageable host-to-device transfer that waits for the
    device: counted by patching Tensor.to, the steady state makes none."""
    from gnrepro.data.device_feed import NormalizeOnDevice

    prepare = NormalizeOnDevice([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    batch = (torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1]))
    copies = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        if self is prepare.stats.mean or self is prepare.stats.std:
            copies.append(args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    first, _ = prepare(batch, torch.device("cpu"))
    for _ in range(4):
        again, _ = prepare(batch, torch.device("cpu"))
    assert len(copies) == 2  # mean and std, once
    torch.testing.assert_close(again, (batch[0].float() / 255 - 0.5) / 0.25)
