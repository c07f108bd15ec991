"""Check the suite against a released model (the cheapest proof that this ResNet, its norm layers
and its evaluation transforms are the paper's): ``python -m gnrepro.evaluate weights=R-50-GN
data=imagenet data.root=/path/to/imagenet``.

The released file is converted into gnrepro's ResNet (gnrepro.weights) and evaluated with the same
model builder, data sets, transforms and ``engine.evaluate`` as training: top-1 and top-5 error on
the val split with the paper's single center crop (Sec. 4.1: shorter side 256, center 224), printed
beside the published number with the difference and appended as one JSON line to
``<results_dir>/published_checks/checks.jsonl`` (plus a Markdown table beside it; the report shows
it too). ``data.mean`` is set to the mean the publisher subtracted, which makes the conversion
exact (see gnrepro.weights.formats).
"""
from __future__ import annotations

import datetime
import logging
import math
import sys

import hydra
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from gnrepro.runs import published_checks
from gnrepro.settings import schema
from gnrepro.models.build import build_model
from gnrepro.data import build_datasets, loader_options
from gnrepro.data.device_feed import feed
from gnrepro.engine.loop import evaluate
from gnrepro.engine.execution import pick_device, set_float32_math
from gnrepro.errors import EXIT_USER, ConfigError, UserError, error_line
from gnrepro.resources import CONFIGS
from gnrepro.settings.preflight import check_command_line, check_composes
from gnrepro.weights import formats
from gnrepro.weights.catalog import CATALOG, lookup
from gnrepro.weights.load import check_setting, load_released, resolve

log = logging.getLogger("gnrepro")


def expected_mean(entry, weights_format: str) -> list[float] | None:
    """The mean the publisher subtracted, when it is known without reading the file (a catalogue
    entry's format, or ``weights_format`` given); None when only the file tells (gnrepro, auto)."""
    fmt = entry.format if entry is not None and weights_format == "auto" else weights_format
    if fmt == "caffe2":
        return formats.CAFFE2_INPUT.rgb_mean01
    if fmt in ("torchvision", "ws_official"):
        return formats.TORCH_INPUT.rgb_mean01
    return None


def check_published(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.weights`` on ``cfg.data``'s val split; returns the JSON line it writes."""
    if OmegaConf.is_missing(cfg, "weights"):
        raise ConfigError(f"weights= is required: a released model ({', '.join(CATALOG)}) or a weight file")
    schema.check(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False), command=schema.EVALUATION)  # before any download
    entry = lookup(str(cfg.weights))
    if entry is not None:
        check_setting(entry, cfg, "weights")
    # The data folder is checked (and read) before the weights are fetched: a wrong data.root must
    # cost one line, not a download of 100+ MB first. The publisher's mean is known up front for a
    # catalogue entry or a stated format; a file that only tells once read rebuilds the transforms.
    known = expected_mean(entry, cfg.weights_format)
    if known is not None:
        cfg.data.mean = known
    splits = build_datasets(cfg.data)
    source = resolve(str(cfg.weights), cfg.weights_format, cfg.conv.name)
    if list(cfg.data.mean) != list(source.convention.rgb_mean01):
        cfg.data.mean = source.convention.rgb_mean01  # the publisher's mean: the converted model is then exact
        splits = build_datasets(cfg.data)
    classes = source.num_classes() or splits.num_classes
    if splits.num_classes > classes:
        raise ConfigError(f"data={cfg.data.name} has {splits.num_classes} classes but {source.describe()} "
                          f"predicts {classes}; evaluate it on the data set it was trained for")
    model = build_model(cfg, classes, splits.in_channels, workers=1)
    info = load_released(model, source, cfg, skip_classifier=False)
    device = pick_device(cfg.device)
    set_float32_math("fp32")  # the published numbers are fp32 evaluations: no TF32 convolutions
    loader = feed(DataLoader(splits.val, batch_size=cfg.eval_batch, shuffle=False, **loader_options(cfg.data)),
                  cfg.data, device, train=False)
    stats = evaluate(model.to(device), loader, device, top5=True)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in stats.values()):
        # the weights were finite (load_released checks), but the outputs overflowed: not a number to publish
        raise ConfigError(f"{source.describe()} gave non-finite outputs on {cfg.data.name} (val loss "
                          f"{stats['val_loss']}); nothing was appended to the published checks; check the file "
                          f"and weights_format")
    pub1 = entry.top1_err if entry else None
    pub5 = entry.top5_err if entry else None
    row = {
        **info,
        "data": cfg.data.name, "images": len(splits.val), "classes": splits.num_classes,
        "model": cfg.model.name, "norm": cfg.norm.name, "conv": cfg.conv.name,
        "crop": f"{cfg.data.eval_resize}/{cfg.data.eval_crop}", "std": list(cfg.data.std),
        "top1_err": stats["val_error"], "top5_err": stats["val_error_top5"], "val_loss": stats["val_loss"],
        "published_top1_err": pub1, "published_top5_err": pub5,
        "diff_top1": stats["val_error"] - pub1 if pub1 is not None else None,
        "diff_top5": stats["val_error_top5"] - pub5 if pub5 is not None else None,
        "source": entry.source if entry else None, "eval_note": entry.eval_note if entry else "",
        "device": str(device), "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    path = published_checks.append(cfg.results_dir, row)
    published = (f"published {pub1:.2f}%, difference {row['diff_top1']:+.2f}" if pub1 is not None
                 else "no published number at this crop")
    print(f"{info['weights']}: top-1 error {row['top1_err']:.2f}% ({published}); top-5 error {row['top5_err']:.2f}%"
          + (f" (published {pub5:.2f}%)" if pub5 is not None else "")
          + f"; {row['images']} {cfg.data.name} val images, crop {row['crop']} -> {path}")
    return row


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        check_published(cfg)
    except UserError as err:
        if cfg.get("debug") is True:
            raise
        print(error_line(err), file=sys.stderr)
        sys.exit(EXIT_USER)


def with_catalogue_choices(argv: list[str]) -> list[str]:
    """Put the catalogue's ``model=``/``norm=`` for ``weights=<name>`` before the user's arguments,
    unless the user chose them (a wrong choice is then reported by check_setting)."""
    names = [a.split("=", 1)[1] for a in argv if a.startswith("weights=")]
    entry = lookup(names[-1]) if names else None
    if entry is None:
        return argv
    given = {a.split("=", 1)[0] for a in argv if "=" in a}
    return [o for o in entry.overrides() if o.split("=", 1)[0] not in given] + argv


def cli() -> None:
    argv = with_catalogue_choices(sys.argv[1:])
    try:
        check_command_line(argv)
        check_composes(argv, "evaluate")  # unknown keys: one line
    except UserError as err:
        print(error_line(err), file=sys.stderr)
        sys.exit(EXIT_USER)
    sys.argv = [sys.argv[0], *argv]
    main()


if __name__ == "__main__":
    cli()
