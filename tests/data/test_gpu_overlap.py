"""data.loader=gpu prepared one batch ahead (gnrepro/data/overlap.py) with batched crops
(gnrepro/data/gpu_decode.py). References: torchvision's own per-image transforms for the same boxes
(the paper's Sec. 4.1 augmentation), the serial loader, and counters patched over the functions that
make the host wait for a device. The scheduling runs on the CPU for real (the stream hand-over is a
no-op there and is replaced by a recorder); what needs CUDA is marked ``cuda``."""
import threading

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import RandomResizedCrop, v2

from conftest import data_config
from gnrepro.data import build_datasets, fake
from gnrepro.data.base import DataError
from gnrepro.data.device_feed import DeviceBatches, feed
from gnrepro.data.gpu_decode import (DecodeOnDevice, canvases, collate_encoded, eval_geometry, resample,
                                     train_geometry, train_view)
from gnrepro.data.overlap import Ahead, StreamHandoff

CUDA = torch.cuda.is_available()
def needs_cuda(test):  # marked cuda as well: scripts/device_check.py runs them on a GPU machine
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU; run on a GPU machine")(test))

# Images of several sizes: two equal (a stacked group), the rest padded onto shared canvases, one
# large (its crops downsample by up to 9x), one small (crops upsample), portrait and landscape.
SIZES = [(48, 64), (48, 64), (60, 50), (37, 91), (300, 400), (500, 375), (20, 30)]
FLOAT_TOL = 1e-3  # grey levels (0-255): float32 rounding of sums of up to a few hundred weighted pixels


def images_and_boxes(seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in SIZES]
    torch.manual_seed(seed)
    boxes = []
    for im in images:  # the workers' draw: torchvision's RandomResizedCrop.get_params, a flip bit
        top, left, h, w = RandomResizedCrop.get_params(im, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        boxes.append([top, left, h, w, int(torch.rand(1) < 0.5)])
    boxes[0][4], boxes[1][4] = 1, 0  # both flips, whatever the draw
    return [im.to(device) for im in images], torch.tensor(boxes)


@pytest.mark.parametrize("size", [32, 224])
def test_batched_train_crops_are_torchvisions_resized_crop_for_the_same_boxes(size):
    """One batched call gives, for every image, torchvision's antialiased ``resized_crop`` of its box
    (then flipped) on float input to FLOAT_TOL, and after rounding the per-image uint8 path within one
    grey level (torchvision's CPU uint8 kernel rounds to uint8 after each of its two passes, with
    fixed-point weights); a box one pixel off, or the flip left out, does not."""
    images, boxes = images_and_boxes()
    groups = canvases([tuple(im.shape[-2:]) for im in images])
    assert len(groups) < len(images) and any(len(m) > 1 for m, _, _ in groups)  # batched, and padded
    crops = resample(images, train_geometry(boxes, size), size)
    assert crops.shape == (len(images), 3, size, size) and crops.dtype == torch.float32
    for k, (image, box) in enumerate(zip(images, boxes.tolist())):
        ref = v2.functional.resized_crop(image.float(), *box[:4], [size, size], antialias=True)
        ref = ref.flip(-1) if box[4] else ref
        torch.testing.assert_close(crops[k], ref, atol=FLOAT_TOL, rtol=0)
        diff = (crops[k].round() - train_view(image, box, size).float()).abs()
        assert diff.max() <= 1
    shifted = boxes.clone()
    shifted[:, 0] += (shifted[:, 0] + shifted[:, 2] < torch.tensor(SIZES)[:, 0]).long() * 2 - 1  # one row down (or up)
    off = resample(images, train_geometry(shifted, size), size)
    unflipped = boxes.clone()
    unflipped[:, 4] = 0
    for k in range(len(images)):  # far outside the tolerance (random pixels: a shift changes every output)
        assert (off[k] - crops[k]).abs().mean() > 100 * FLOAT_TOL
    assert (resample(images, train_geometry(unflipped, size), size)[0] - crops[0]).abs().mean() > 100 * FLOAT_TOL


@pytest.mark.parametrize("resize,crop", [(256, 224), (36, 32), (30, 40)])  # the last pads, as center_crop does
def test_batched_eval_crops_are_torchvisions_resize_and_center_crop(resize, crop):
    images, _ = images_and_boxes()
    crops = resample(images, eval_geometry([tuple(im.shape[-2:]) for im in images], resize, crop), crop)
    for k, image in enumerate(images):
        ref = v2.functional.center_crop(v2.functional.resize(image.float(), [resize], antialias=True), [crop, crop])
        torch.testing.assert_close(crops[k], ref, atol=FLOAT_TOL, rtol=0)
    wrong = eval_geometry([tuple(im.shape[-2:]) for im in images], resize + 8, crop)
    assert (resample(images, wrong, crop) - crops).abs().mean() > 100 * FLOAT_TOL  # another resize is caught


def test_canvases_bound_the_padding_and_keep_a_huge_image_apart():
    sizes = [(375, 500), (333, 500), (500, 375), (281, 500), (4000, 3000), (375, 500)]
    groups = canvases(sizes)
    assert sorted(k for members, _, _ in groups for k in members) == list(range(len(sizes)))
    for members, h, w in groups:
        assert all(sizes[k][0] <= h and sizes[k][1] <= w for k in members)
        assert all(h * w <= 2.0 * sizes[k][0] * sizes[k][1] for k in members)  # no image padded beyond 2x
    assert ([4], 4000, 3000) in groups and len(groups) == 2  # ImageNet-like sizes share one canvas


# ------------------------------------------------------------------------------------- scheduling

class RecordingHandoff(StreamHandoff):
    """The CPU hand-over, logging which thread calls what: the CUDA calls' places in the schedule."""

    def __init__(self):
        super().__init__("cpu")
        self.log = []
        self.tokens = 0

    def side(self):
        self.log.append(("side", threading.current_thread().name))
        return super().side()

    def ready(self):
        self.tokens += 1
        self.log.append(("ready", threading.current_thread().name, self.tokens))
        return self.tokens

    def receive(self, token, tensors):
        self.log.append(("receive", threading.current_thread().name, token, [id(t) for t in tensors]))


def test_the_next_batch_is_prepared_while_the_step_runs_and_no_further():
    """While the consumer holds batch 0 (its "step"), batch 1 is prepared on the loader thread; batch 2
    is not taken from the DataLoader until batch 1 is taken (one ahead). Each batch is handed over on
    the consumer's thread with the token recorded after its work, naming every tensor handed over."""
    pulls, prepared = [], [threading.Event() for _ in range(4)]

    def source():
        for k in range(4):
            pulls.append(k)
            yield k

    def work(k):
        out = (torch.full((2,), float(k)), torch.tensor([k]))
        prepared[k].set()
        return out

    handoff = RecordingHandoff()
    it = Ahead(source(), work, handoff)
    first = next(it)
    assert prepared[1].wait(timeout=60), "batch 1 was not prepared while batch 0 was in use"
    assert pulls == [0, 1]  # deterministic: the thread needs a third demand to take batch 2
    assert not prepared[2].is_set()
    rest = list(it)
    assert [int(b[1]) for b in [first, *rest]] == [0, 1, 2, 3]
    assert handoff.log[0] == ("side", "gnrepro-loader")
    readies = [e for e in handoff.log if e[0] == "ready"]
    receives = [e for e in handoff.log if e[0] == "receive"]
    assert all(e[1] == "gnrepro-loader" for e in readies)
    assert [e[2] for e in receives] == [1, 2, 3, 4] and all(e[1] == threading.current_thread().name for e in receives)
    for entry, batch in zip(receives, [first, *rest]):
        assert entry[3] == [id(t) for t in batch]  # images and labels, the very tensors returned
    for k in range(1, 5):  # each batch's event is recorded before it is received
        assert handoff.log.index(readies[k - 1]) < handoff.log.index(receives[k - 1])


def test_an_error_in_the_loader_thread_is_raised_on_the_training_thread_unchanged():
    bad = DataError("cannot read image /x/y.JPEG (truncated); delete or replace it")

    def work(k):
        if k == 2:
            raise bad
        return (torch.tensor([k]),)

    it = Ahead(iter(range(5)), work, StreamHandoff("cpu"))
    assert [int(next(it)[0]) for _ in range(2)] == [0, 1]
    with pytest.raises(DataError) as caught:
        next(it)
    assert caught.value is bad and str(caught.value).count("\n") == 0
    assert not it._thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)


def test_leaving_the_loop_early_ends_the_loader_thread():
    pulls = []

    def source():
        for k in range(100):
            pulls.append(k)
            yield k

    it = Ahead(source(), lambda k: (torch.tensor([k]),), StreamHandoff("cpu"))
    next(it)
    it.close()
    assert not it._thread.is_alive() and len(pulls) <= 3


# ------------------------------------------------------------------------------ the real loader

def gpu_cfg(root, crop=(32, 36, 32)):
    cfg = data_config("imagenet", root)
    cfg.num_workers, cfg.loader = 0, "gpu"
    cfg.train_crop, cfg.eval_resize, cfg.eval_crop = crop
    return cfg


def test_overlapped_batches_are_the_serial_ones_and_near_the_per_image_path(tmp_path):
    """The loader thread changes when a batch is made, not what: the same seed gives the same train
    batches (crops drawn in the same order) and the same labels; the batched crops are the per-image
    path's within one grey level (divided by std after normalization)."""
    fake.make_imagenet(tmp_path, classes=2, train_per_class=6, size=(80, 60))
    cfg = gpu_cfg(tmp_path)
    splits = build_datasets(cfg)
    loader = DataLoader(splits.train, batch_size=4, shuffle=False, collate_fn=collate_encoded)
    runs = {}
    for name, prepare, overlap in (("ahead", DecodeOnDevice(cfg, True), True),
                                   ("serial", DecodeOnDevice(cfg, True), False),
                                   ("per_image", DecodeOnDevice(cfg, True, per_image=True), False)):
        torch.manual_seed(0)
        runs[name] = list(DeviceBatches(loader, prepare, torch.device("cpu"), overlap=overlap))
    assert len(runs["ahead"]) == 3
    std = torch.tensor(list(cfg.std))[:, None, None]
    for (a, ta), (s, ts), (p, tp) in zip(runs["ahead"], runs["serial"], runs["per_image"]):
        assert torch.equal(a, s) and torch.equal(ta, ts) and torch.equal(ta, tp)
        assert ((a - p) * std).abs().max() <= 1.01 / 255
    val = DataLoader(splits.val, batch_size=3, collate_fn=collate_encoded)
    ahead = list(feed(val, cfg, torch.device("cpu"), train=False, overlap=True))
    per_image = list(DeviceBatches(val, DecodeOnDevice(cfg, False, per_image=True), torch.device("cpu")))
    for (a, ta), (p, tp) in zip(ahead, per_image):
        assert torch.equal(ta, tp) and ((a - p) * std).abs().max() <= 1.01 / 255


def test_feed_overlaps_on_cuda_only_by_default(tmp_path):
    cfg = gpu_cfg(tmp_path)
    assert feed([], cfg, torch.device("cpu")).overlap is False
    assert feed([], cfg, torch.device("cuda")).overlap is True  # nothing touches the device until iterated
    cfg.loader = "pil_uint8"
    assert feed([], cfg, torch.device("cuda")).overlap is True
    assert feed([], cfg, torch.device("cuda"), overlap=False).overlap is False


SYNCS = [  # what makes the host wait for a device (on a CPU tensor they are counted all the same)
    (torch.Tensor, "item"), (torch.Tensor, "tolist"), (torch.Tensor, "cpu"), (torch.Tensor, "numpy"),
    (torch.Tensor, "__bool__"), (torch.Tensor, "__int__"), (torch.Tensor, "__float__"),
    (torch.cuda, "synchronize"), (torch.cuda.Stream, "synchronize"), (torch.cuda.Event, "synchronize"),
    (torch.cuda.Stream, "query"), (torch.cuda.Event, "query"),
]


class SyncCounter:
    """Patches every function in SYNCS (all threads) to count its calls, then calls it."""

    def __init__(self, monkeypatch):
        self.calls = []
        for owner, name in SYNCS:
            real = getattr(owner, name)

            def counting(*args, _real=real, _name=name, **kwargs):
                self.calls.append((_name, threading.current_thread().name))
                return _real(*args, **kwargs)

            monkeypatch.setattr(owner, name, counting)


def all_without_syncs_after_the_first(batches, monkeypatch) -> list:
    """Every batch of ``batches``, asserting that none after the first (threads started, device
    constants copied) made the host wait for a device."""
    it = iter(batches)
    got = [next(it)]
    with monkeypatch.context() as patch:
        counter = SyncCounter(patch)
        got += list(it)
    assert counter.calls == []
    return got


def steady_state_syncs(monkeypatch, root, prepare, batches=5):
    """Sync calls while the loader yields ``batches`` batches after its first (DataLoader worker and
    loader thread started, device constants copied), with the loader thread on."""
    cfg = gpu_cfg(root)
    splits = build_datasets(cfg)
    # the worker runs the Dataset in its own process; no shuffle: a sampler's once-per-epoch
    # ``randperm(n).tolist()`` is a host tensor read as the epoch starts, not a device sync
    loader = DataLoader(splits.train, batch_size=4, shuffle=False, num_workers=1, collate_fn=collate_encoded,
                        persistent_workers=False)
    it = iter(DeviceBatches(loader, prepare(cfg), torch.device("cpu"), overlap=True))
    first = next(it)
    with monkeypatch.context() as patch:
        counter = SyncCounter(patch)
        got = [next(it) for _ in range(batches)]
    it.close()
    assert first[0].shape == got[-1][0].shape == (4, 3, 32, 32)
    return counter.calls


def test_no_host_sync_in_the_steady_state_and_the_counter_catches_one(tmp_path, monkeypatch):
    """Zero calls to anything that waits for the device, on either thread, over five batches after the
    first: decode, batched crops, normalization and copies are all queued. Negative controls: a
    prepare that reads one value back (``.item()``), and the per-image path (which reads its boxes
    with ``tolist``), are counted once per batch: the test can fail."""
    fake.make_imagenet(tmp_path, classes=2, train_per_class=12, size=(80, 60))
    assert steady_state_syncs(monkeypatch, tmp_path, lambda cfg: DecodeOnDevice(cfg, True)) == []

    def reading_back(cfg):
        real = DecodeOnDevice(cfg, True)

        def prepare(batch, device):
            images, targets = real(batch, device)
            images.sum().item()  # e.g. a NaN check: the host waits for the whole batch
            return images, targets
        return prepare

    calls = steady_state_syncs(monkeypatch, tmp_path, reading_back)
    assert calls.count(("item", "gnrepro-loader")) == 5
    calls = steady_state_syncs(monkeypatch, tmp_path, lambda cfg: DecodeOnDevice(cfg, True, per_image=True))
    assert calls.count(("tolist", "gnrepro-loader")) == 5


def test_the_default_pil_loader_is_copied_ahead_on_cuda_and_untouched_on_a_cpu(tmp_path, monkeypatch):
    """``pil`` (the default): on a GPU its float batches are copied one step ahead on the side stream
    (the copy ran on the compute stream before, issue 23); the batches are the DataLoader's own, in
    order, with no host sync in the steady state; on a CPU the loader is returned as it is."""
    fake.make_imagenet(tmp_path, classes=2, train_per_class=12, size=(80, 60))
    cfg = gpu_cfg(tmp_path)
    cfg.loader = "pil"
    splits = build_datasets(cfg)
    loader = DataLoader(splits.val, batch_size=2, shuffle=False, num_workers=1, persistent_workers=False)
    assert feed(loader, cfg, torch.device("cpu")) is loader
    assert feed(loader, cfg, torch.device("cuda")).overlap is True  # nothing touches the device until iterated
    assert feed(loader, cfg, torch.device("cuda"), overlap=False) is loader
    got = all_without_syncs_after_the_first(feed(loader, cfg, torch.device("cpu"), overlap=True), monkeypatch)
    want = list(loader)
    assert len(got) == len(want) == 2
    for (a, ta), (w, tw) in zip(got, want):
        assert a.dtype == torch.float32 and torch.equal(a, w) and torch.equal(ta, tw)


# ------------------------------------------------------------------------------------- on a GPU

@needs_cuda
def test_batched_crops_on_cuda_are_torchvisions_per_image_cuda_crops():
    """On the GPU, torchvision's uint8 resize interpolates in float32 and rounds: the batched crops,
    rounded, equal it except at rounding ties (at most one level, on under 0.1% of the pixels)."""
    images, boxes = images_and_boxes(device="cuda")
    crops = resample(images, train_geometry(boxes, 224).cuda(), 224).round_().to(torch.uint8)
    diffs = []
    for k, (image, box) in enumerate(zip(images, boxes.tolist())):
        diffs.append((crops[k].int() - train_view(image, box, 224).int()).abs())
    diff = torch.stack(diffs)
    assert diff.max().item() <= 1 and (diff > 0).float().mean().item() < 1e-3


@needs_cuda
def test_the_overlapped_loader_on_cuda_gives_the_serial_batches_without_syncs(tmp_path, monkeypatch):
    """nvJPEG decode, batched crops and the hand-over on real streams: the same batches as the serial
    loader, on the device, and no counted sync on either thread in the steady state."""
    fake.make_imagenet(tmp_path, classes=2, train_per_class=12, size=(400, 300))
    cfg = gpu_cfg(tmp_path, crop=(224, 256, 224))
    splits = build_datasets(cfg)
    loader = DataLoader(splits.val, batch_size=2, collate_fn=collate_encoded, pin_memory=True)
    serial = list(feed(loader, cfg, torch.device("cuda"), train=False, overlap=False))
    ahead = feed(loader, cfg, torch.device("cuda"), train=False, overlap=True)
    got = all_without_syncs_after_the_first(ahead, monkeypatch)
    assert len(got) == len(serial)
    for (a, ta), (s, ts) in zip(got, serial):
        assert a.is_cuda and torch.equal(a, s) and torch.equal(ta, ts)


@needs_cuda
def test_the_pil_loader_copied_ahead_on_cuda_gives_the_loaders_batches_without_syncs(tmp_path, monkeypatch):
    """The default loader on real streams: the DataLoader's float batches on the device, unchanged,
    and no counted sync on either thread after the first batch."""
    fake.make_imagenet(tmp_path, classes=2, train_per_class=12, size=(400, 300))
    cfg = gpu_cfg(tmp_path, crop=(224, 256, 224))
    cfg.loader = "pil"
    splits = build_datasets(cfg)
    loader = DataLoader(splits.val, batch_size=2, pin_memory=True)
    want = list(loader)
    got = all_without_syncs_after_the_first(feed(loader, cfg, torch.device("cuda"), train=False), monkeypatch)
    assert len(got) == len(want)
    for (a, ta), (w, tw) in zip(got, want):
        assert a.is_cuda and ta.is_cuda and torch.equal(a.cpu(), w) and torch.equal(ta.cpu(), tw)
