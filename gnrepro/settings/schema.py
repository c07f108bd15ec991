"""The one schema of the training config: every key, its type and its range, declared in one table
per config group, and one checker (``check``) that runs before any data or model is built.

Why a table: a value with the wrong type or range must never reach the trainer, where it either
crashes with a traceback (``seed=-1``) or silently changes the meaning of a run
(``optim.milestones=[1.5]`` never drops the LR, the paper's Sec. 4.1 schedule). Each group's keys are
declared once below; the checker also refuses keys that are not declared (a typo or ``+optim.lr=0.5``
would otherwise be stored in config.yaml and ignored).

Adding a key: declare it in its group's table (``TOP``, ``OPTIM``, or the ``keys`` / ``options`` of a
``Group``) with a spec (``Int``, ``Float``, ``Bool``, ``Choice``, ``Str``, ``Floats``), give it a
commented default in its yaml, and, if it depends on other keys, add a function to ``RULES``.
Adding an option of a group (a new ``norm``, ``model`` or ``data``): add its name and its own keys to
that group's ``options``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from gnrepro.data.device_feed import LOADERS
from gnrepro.errors import ConfigError, is_int
from gnrepro.engine.execution import COMPILE_MODES, PRECISIONS
from gnrepro.layers.norm_registry import NORM_KINDS, NORMS
from gnrepro.weights.formats import FORMATS as WEIGHT_FORMATS

MISSING = "???"  # OmegaConf's mark of a value that must be given


# ------------------------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class Spec:
    """What one key accepts; ``null`` allows None, ``missing`` allows ``???`` (checked later by its user)."""
    null: bool = field(default=False, kw_only=True)
    missing: bool = field(default=False, kw_only=True)

    def expected(self) -> str:  # the accepted values, in words
        raise NotImplementedError

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def example(self) -> str:
        raise NotImplementedError


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Int(Spec):
    min: Optional[int] = None
    max: Optional[int] = None
    eg: Optional[str] = None  # a value to suggest

    def expected(self) -> str:
        if self.max is not None:
            return f"an integer in [{self.min}, {self.max}]"
        return "a positive integer" if self.min == 1 else f"an integer >= {self.min}"

    def accepts(self, v) -> bool:
        return is_int(v) and (self.min is None or v >= self.min) and (self.max is None or v <= self.max)

    def example(self) -> str:
        return self.eg or str(max(self.min or 0, 2))


@dataclass(frozen=True)
class Float(Spec):
    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    eg: str = "0.1"  # a value to suggest

    def expected(self) -> str:
        bounds = [f">= {self.ge:g}" if self.ge is not None else None, f"> {self.gt:g}" if self.gt is not None else None,
                  f"< {self.lt:g}" if self.lt is not None else None]
        if self.lt is not None and (self.ge is not None or self.gt is not None):
            lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}"
            return f"a finite number in {lo}, {self.lt:g})"
        return " ".join(["a finite number", *[b for b in bounds if b]])

    def accepts(self, v) -> bool:
        return (_is_number(v) and (self.gt is None or v > self.gt) and (self.ge is None or v >= self.ge)
                and (self.lt is None or v < self.lt))

    def example(self) -> str:
        return self.eg


@dataclass(frozen=True)
class Bool(Spec):
    def expected(self) -> str:
        return "true or false"

    def accepts(self, v) -> bool:
        return isinstance(v, bool)

    def example(self) -> str:
        return "false"


@dataclass(frozen=True)
class Choice(Spec):
    values: tuple = ()

    def expected(self) -> str:
        return "one of " + ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in self.values)

    def accepts(self, v) -> bool:
        return any(v == c and type(v) is type(c) for c in self.values)

    def example(self) -> str:
        return str(self.values[0]).lower() if isinstance(self.values[0], bool) else str(self.values[0])


@dataclass(frozen=True)
class Str(Spec):
    eg: str = "NAME"

    def expected(self) -> str:
        return "a non-empty string"

    def accepts(self, v) -> bool:
        return isinstance(v, str) and v.strip() != ""

    def example(self) -> str:
        return self.eg


@dataclass(frozen=True)
class Floats(Spec):
    """A list of numbers, each accepted by ``item``; ``length`` fixes its length, ``increasing`` its order."""
    item: Float = Float()
    length: Optional[int] = None
    increasing: bool = False
    eg: str = "[0.3,0.6,0.9]"

    def expected(self) -> str:
        size = f"{self.length} " if self.length else ""
        order = ", strictly increasing" if self.increasing else ""
        return f"a list of {size}numbers, each {self.item.expected()}{order}"

    def accepts(self, v) -> bool:
        if not isinstance(v, (list, tuple)) or (self.length is not None and len(v) != self.length):
            return False
        if not all(self.item.accepts(x) for x in v):
            return False
        return not self.increasing or all(a < b for a, b in zip(v, v[1:]))

    def example(self) -> str:
        return self.eg


@dataclass(frozen=True)
class Table(Spec):
    """A nested block of keys, each checked against ``keys`` (or null where ``null``)."""
    keys: dict = field(default_factory=dict)

    def expected(self) -> str:
        return "a block of keys " + ", ".join(self.keys)

    def accepts(self, v) -> bool:
        return isinstance(v, dict)

    def example(self) -> str:
        return "null"


@dataclass(frozen=True)
class Device(Spec):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and only devices that exist on this machine."""
    def expected(self) -> str:
        return "auto, cpu, cuda or cuda:N"

    def accepts(self, v) -> bool:
        if v in ("auto", "cpu", "cuda"):
            return True
        return isinstance(v, str) and v.startswith("cuda:") and v[5:].isdigit()

    def example(self) -> str:
        return "auto"


# ------------------------------------------------------------------------------------------ groups

@dataclass(frozen=True)
class Group:
    """A config group: ``keys`` every option has, ``options`` maps each ``name`` to its own further keys.

    ``named_by_file``: ``<group>.name`` must equal the chosen file (``data=cifar10`` -> ``data.name:
    cifar10``); false where one name has several files (``norm=gn_ws`` is ``norm.name: gn``).
    ``fixed``: values an option's keys must hold (``resnet101`` has ``depth: 101``).
    """
    keys: dict
    options: dict
    named_by_file: bool = True
    fixed: dict = field(default_factory=dict)


TOP = {
    "batch": Int(min=1),                    # images per worker (paper Sec. 4.1)
    "workers": Int(min=1),
    "epochs": Int(min=1),
    "final_epochs": Int(min=1),
    "seed": Int(min=0, max=2**31 - 1, eg="0"),      # numpy seeds must be non-negative 32-bit
    "deterministic": Bool(),
    "device": Device(),
    "eval_batch": Int(min=1),
    "progress": Bool(),
    "checkpoint_steps": Int(min=0),
    "keep_checkpoint": Choice(values=("last", "weights", "none")),  # what a completed run keeps (engine/checkpoint.py)
    "progress_seconds": Float(ge=0, eg="60"),     # off a terminal: a progress line at most this often (engine/loop.py)
    "results_dir": Str(eg="outputs/runs"),
    "debug": Bool(),
    "init": Str(null=True, eg="tv-resnet50"),        # released weights to fine-tune from (gnrepro/weights/catalog.py)
    "init_format": Choice(values=("auto", *WEIGHT_FORMATS)),
    # how a step executes (gnrepro/engine/execution.py, gnrepro/engine/loop.py); only precision changes results
    "log_every": Int(min=1, eg="50"),
    "precision": Choice(values=tuple(PRECISIONS)),
    "channels_last": Bool(),
    "compile": Choice(values=COMPILE_MODES),
    "cudnn_benchmark": Choice(values=("auto", True, False)),
}

OPTIM = {
    "base_lr": Float(gt=0),
    "momentum": Float(ge=0, lt=1, eg="0.9"),
    "weight_decay": Float(ge=0, eg="1e-4"),
    "milestones": Floats(item=Float(gt=0, lt=1), increasing=True),
    "warmup_epochs": Float(ge=0, eg="5"),
    "warmup": Choice(values=("auto", "always", "never")),
    "fused": Choice(values=("auto", True, False)),
}

PROBE = {  # Figure 6's response percentiles (gnrepro/engine/probe.py)
    "every_steps": Int(min=0, eg="1000"),
    "layer": Str(null=True, eg="conv5_3"),
    "samples": Int(min=1, null=True, eg="4096"),
    "percentiles": Floats(item=Float(ge=0, eg="50"), eg="[1,20,80,99]"),
}

AUGMENT = {  # the digits proxy's per-image warp and noise (gnrepro/data/digits.py)
    "rotate": Float(ge=0, eg="15"),
    "scale": Float(ge=0, lt=1, eg="0.15"),
    "shear": Float(ge=0, eg="10"),
    "translate": Float(ge=0, eg="1"),
    "noise": Float(ge=0, eg="0.2"),
    "contrast": Float(ge=1, eg="3"),
    "brightness": Float(ge=0, eg="0.5"),
}
EVAL_STATS = {  # BN's statistics at evaluation (gnrepro/layers/precise_bn.py)
    "eval_stats": Choice(values=("running", "precise")),
    "precise_batches": Int(min=1, eg="100"),
}

LOADER = {  # DataLoader settings of every data set on disk
    "root": Str(missing=True),  # ``???`` until given: the data builder names what to put there
    "download": Bool(),
    "num_workers": Int(min=0),
    "pin_memory": Choice(values=("auto", True, False)),
    "persistent_workers": Bool(),
    "prefetch_factor": Int(min=1, null=True),
    "mean": Floats(item=Float(ge=0, eg="0.5"), length=3, eg="[0.485,0.456,0.406]"),
    "std": Floats(item=Float(gt=0, eg="0.25"), length=3, eg="[0.229,0.224,0.225]"),
}
PHOTOS = {  # the paper's ImageNet transforms (Sec. 4.1)
    **LOADER,
    "train_crop": Int(min=1),
    "eval_resize": Int(min=1),
    "eval_crop": Int(min=1),
    "skip_bad": Bool(),
    "loader": Choice(values=LOADERS),  # how batches reach the device (gnrepro/data/device_feed.py)
}
CIFAR = {**LOADER, "train_crop": Int(min=1), "crop_padding": Int(min=0)}

GROUPS = {
    "model": Group(
        keys={"name": Str(), "depth": Int(min=1), "small_input": Bool()},
        options={"resnet14": {}, "resnet26": {}, "resnet50": {}, "resnet101": {},
                 "vgg16": {"arch": Choice(values=("vgg",)), "classifier_width": Int(min=1, eg="512"),
                           "pool_size": Int(min=1, eg="1"), "dropout": Float(ge=0, lt=1, eg="0.5")}},
        fixed={"resnet14": {"depth": 14}, "resnet26": {"depth": 26}, "resnet50": {"depth": 50}, "resnet101": {"depth": 101},
               "vgg16": {"depth": 16}},
    ),
    "norm": Group(
        keys={"name": Str()},
        options={
            "bn": {"sync": Bool(), "frozen": Bool(), **EVAL_STATS},
            "brn": {"r_max": Float(ge=1, eg="1.5"), "d_max": Float(ge=0, eg="0.5"), "relax_start": Int(min=0, eg="0"),
                    "relax_steps": Int(min=0, eg="0"), **EVAL_STATS},
            "gn": {"groups": Int(min=1, null=True), "channels_per_group": Int(min=1, null=True)},
            "ln": {},
            "in": {},
            "none": {},
        },
        named_by_file=False,
    ),
    "conv": Group(keys={"name": Str()}, options={"plain": {}, "ws": {"eps": Float(gt=0, eg="1e-5")}},
                  named_by_file=False),
    "data": Group(
        keys={"name": Str(), "epochs": Int(min=1), "small_input": Bool(), "subset": Int(min=1, null=True)},
        options={
            "digits": {"image_size": Int(min=8, max=256), "val_fraction": Float(gt=0, lt=1, eg="0.2"),
                       "split_seed": Int(min=0, max=2**32 - 1, eg="0"), "num_workers": Int(min=0),
                       "augment": Table(keys=AUGMENT, null=True), "augment_val": Int(min=0, eg="4")},
            "imagenet": PHOTOS,
            "pets": PHOTOS,
            "imagenette": {**PHOTOS, "size": Choice(values=("full", "320px", "160px"))},
            "cifar10": CIFAR,
            "cifar100": CIFAR,
        },
    ),
    "logger": Group(
        keys={"name": Str()},
        options={"none": {}, "wandb": {"project": Str(), "entity": Str(null=True),
                                       "mode": Choice(values=("offline", "online", "disabled")),
                                       "init_timeout": Float(gt=0, eg="30")}},
    ),
}
SECTIONS = {"optim": OPTIM, "probe": PROBE}  # nested keys that are not a config group


EVALUATE = {  # python -m gnrepro.evaluate (configs/evaluate.yaml): its own top level, the same groups
    "weights": Str(missing=True, eg="R-50-GN"),   # ``???`` until given: the evaluator names the choices
    "weights_format": Choice(values=("auto", *WEIGHT_FORMATS)),
    "workers": Int(min=1),
    "device": Device(),
    "eval_batch": Int(min=1),
    "results_dir": Str(eg="outputs/runs"),
    "debug": Bool(),
}


# ---------------------------------------------------------------------------------------- checking

def _check_value(key: str, spec: Spec, value) -> None:
    if value == MISSING and isinstance(value, str):
        if spec.missing:
            return
        raise ConfigError(f"{key} is not set; set e.g. {key}={spec.example()}")
    if value is None and spec.null:
        return
    if not spec.accepts(value):
        raise ConfigError(f"{key} must be {spec.expected()}, got {value!r}; set e.g. {key}={spec.example()}")
    if isinstance(spec, Table):
        _check_keys(key + ".", spec.keys, value, key)


def _check_keys(prefix: str, table: dict, values: dict, what: str) -> None:
    """Every key of ``values`` declared in ``table``, every declared key present and accepted."""
    for key in values:
        if key not in table:
            raise ConfigError(unknown_key(prefix + key))
    for key, spec in table.items():
        if key not in values:
            raise ConfigError(f"{prefix}{key} is missing from the config ({what}); restore it in its yaml file")
        _check_value(prefix + key, spec, values[key])


def _check_group(name: str, group: Group, values, choice: Optional[str]) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a config group, got {values!r}; pick one with {name}=<option>")
    option = values.get("name")
    if option not in group.options:
        raise ConfigError(f"unknown {name}.name {option!r}; choose one of: {', '.join(group.options)}")
    if group.named_by_file and choice is not None and option != choice:
        raise ConfigError(f"{name}.name={option} does not match {name}={choice}; "
                          f"pick the {name} with {name}={option} instead of setting {name}.name")
    table = {**group.keys, **group.options[option]}
    for key in values:
        if key not in table:
            raise ConfigError(f"{name} {option!r} has no {key} (its keys: {', '.join(table)}); "
                              f"remove {name}.{key} from the command line")
    _check_keys(f"{name}.", table, values, f"{name}={option}")
    for key, want in group.fixed.get(option, {}).items():
        if values[key] != want:
            raise ConfigError(f"{name}.{key}={values[key]!r} contradicts {name}.name={option} ({key} {want}); "
                              f"pick another {name} with {name}=<option> instead")


@dataclass(frozen=True)
class Command:
    """What one command's config holds: its top-level keys, nested sections, the config groups it
    composes (all from ``GROUPS``) and the rules across keys it must pass."""
    keys_phrase: str  # how an unknown top-level key's message introduces the known ones
    where: str        # where a missing key should be restored
    top: dict
    sections: dict
    groups: tuple
    rules: tuple


def unknown_key(key: str, command: Optional[Command] = None) -> str:
    """The message for a key that ``command``'s config (training's by default) does not have
    (Hydra refuses those without ``+``)."""
    command = command or TRAIN
    head, _, rest = key.partition(".")
    if rest and (head in command.sections or head in command.groups):
        known = ", ".join(command.sections[head]) if head in command.sections else f"each option's keys: configs/{head}/"
        return f"unknown key {key}: {head} has no {rest!r} ({known}); check the spelling or remove it"
    return (f"unknown key {key}; {command.keys_phrase}: {', '.join([*command.top, *command.sections, *command.groups])}; "
            f"check the spelling or remove it")


def check(cfg: dict, choices: Optional[dict] = None, command: Optional[Command] = None) -> list[str]:
    """Raise ConfigError naming the first bad value of the resolved config ``cfg`` (a plain dict) of
    ``command`` (training's by default).

    ``choices`` are the chosen files of each group (Hydra's ``hydra.runtime.choices``), when known.
    Returns notes: one line each for legal but unusual values, saying what they do.
    """
    command = command or TRAIN
    choices = choices or {}
    for key in cfg:
        if key not in command.top and key not in command.sections and key not in command.groups:
            raise ConfigError(unknown_key(key, command))
    for name in command.groups:
        _check_group(name, GROUPS[name], cfg.get(name), choices.get(name))
    for section, table in command.sections.items():
        values = cfg.get(section)
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must hold the keys {', '.join(table)}, got {values!r}")
        _check_keys(f"{section}.", table, values, section)
    _check_keys("", command.top, {k: v for k, v in cfg.items() if k in command.top}, command.where)
    notes = []
    for rule in command.rules:
        note = rule(cfg)
        if note:
            notes.append(note)
    return notes


# ------------------------------------------------------------------------------ rules across keys

def _warmup_fits(cfg: dict) -> None:
    o = cfg["optim"]
    applies = o["warmup"] == "always" or (o["warmup"] == "auto" and cfg["batch"] > 32)  # scaled LR > base LR
    if applies and o["warmup_epochs"] >= cfg["epochs"]:
        raise ConfigError(f"optim.warmup_epochs={o['warmup_epochs']} is not shorter than the run (epochs={cfg['epochs']}): "
                          f"the LR would never reach its peak; lower optim.warmup_epochs or set optim.warmup=never")


def _train_split_fits(cfg: dict) -> None:
    from gnrepro.data import (
        train_images,  # the data package imports torch; only needed here
    )

    data = cfg["data"]
    total = train_images(data)
    if total is None:
        return
    if data["subset"] is not None and data["subset"] > total:
        raise ConfigError(f"data.subset={data['subset']} is more than the {total:,} train images of data={data['name']}; "
                          f"set data.subset to at most {total} (or null for all)")
    have = min(total, data["subset"] or total)
    step = cfg["batch"] * cfg["workers"]
    if step > have:
        raise ConfigError(f"one step needs batch*workers = {step} images but the train split has only {have}; "
                          f"lower batch or workers")


def _augment_val(cfg: dict) -> None:
    data = cfg["data"]
    if data.get("augment_val") and data.get("augment") is None:
        raise ConfigError(f"data.augment_val={data['augment_val']} draws val copies with the training augmentation, "
                          "but data.augment is null; set data.augment (or use a proxy preset) or data.augment_val=0")


def _digits_split(cfg: dict) -> None:
    from gnrepro.data import digits_split

    data = cfg["data"]
    if data["name"] == "digits":
        n_train, n_val = digits_split(data["val_fraction"])
        if min(n_train, n_val) < 10:  # a stratified split needs one image of each of the 10 classes
            raise ConfigError(f"data.val_fraction={data['val_fraction']} leaves {n_train} train / {n_val} val images; "
                              f"each split needs at least 10 (one per class); use e.g. data.val_fraction=0.2")


def _gn_groups(cfg: dict) -> None:
    from gnrepro.layers.norms import num_groups
    from gnrepro.models.resnet import norm_widths

    norm = cfg["norm"]
    if NORM_KINDS[norm["name"]].grouped:
        for width in norm_widths():  # G (or C/G) must fit every layer of the model
            num_groups(width, norm["groups"], norm["channels_per_group"])


def _final_epochs(cfg: dict) -> Optional[str]:
    if cfg["final_epochs"] > cfg["epochs"]:
        return (f"final_epochs={cfg['final_epochs']} is more than epochs={cfg['epochs']}: "
                + ("the result is the last epoch's error" if cfg["epochs"] == 1
                   else f"the result is the median of all {cfg['epochs']} epochs"))
    return None


def _eval_crop(cfg: dict) -> Optional[str]:
    data = cfg["data"]
    if "eval_crop" in data and data["eval_crop"] > data["eval_resize"]:
        return (f"data.eval_crop={data['eval_crop']} is larger than data.eval_resize={data['eval_resize']}: "
                f"the evaluation crop is padded with zeros")
    return None


def _cuda_exists(cfg: dict) -> None:
    device = cfg["device"]
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"device={device} but this machine has no CUDA GPU (torch.cuda.is_available() is false); "
                          f"use device=auto or device=cpu")
    if ":" in device and int(device[5:]) >= count:
        raise ConfigError(f"device={device} does not exist: this machine has {count} CUDA GPU(s), "
                          f"cuda:0 to cuda:{count - 1}")


def _gpu_loader(cfg: dict) -> None:
    if cfg["data"].get("loader") != "gpu":
        return
    if cfg["device"] == "cpu":
        raise ConfigError("data.loader=gpu decodes JPEGs on the GPU but device=cpu; "
                          "use data.loader=pil (or pil_uint8) on the CPU")
    from gnrepro.data.gpu_decode import cuda_decode_problem

    problem = cuda_decode_problem()
    if problem is not None:
        raise ConfigError(f"data.loader=gpu decodes JPEGs on the GPU but {problem}; use data.loader=pil or data.loader=pil_uint8")


def _norm_fits_model(cfg: dict) -> None:
    if not NORM_KINDS[cfg["norm"]["name"]].layer and cfg["model"].get("arch", "resnet") != "vgg":
        raise ConfigError(f"norm=none (no normalization) is for VGG only; model={cfg['model']['name']} needs a norm, "
                          "e.g. norm=bn or norm=gn (or model=vgg16)")


def _probe_layer(cfg: dict) -> None:
    probe = cfg["probe"]
    if probe["every_steps"] and not probe["layer"]:
        raise ConfigError("probe.every_steps is set but probe.layer is empty; name a layer, e.g. probe.layer=conv5_3")
    if any(p > 100 for p in probe["percentiles"]):
        raise ConfigError(f"probe.percentiles must lie in [0, 100], got {probe['percentiles']}; set e.g. probe.percentiles=[1,20,80,99]")


def _execution(cfg: dict) -> None:
    if cfg["deterministic"] and cfg["cudnn_benchmark"] is True:
        raise ConfigError("cudnn_benchmark=true picks convolution algorithms by timing, which deterministic=true forbids; "
                          "set cudnn_benchmark=auto (off when deterministic) or deterministic=false")
    if cfg["compile"] == "off":
        return
    if cfg["probe"]["every_steps"]:
        raise ConfigError(f"compile={cfg['compile']} with probe.every_steps={cfg['probe']['every_steps']}: the probe's "
                          "hooks need the eager model; set compile=off for a probed run")
    from gnrepro.engine.execution import compiler_available

    if not cfg["device"].startswith("cuda") and not compiler_available():
        import torch

        if cfg["device"] == "cpu" or not torch.cuda.is_available():
            raise ConfigError(f"compile={cfg['compile']} on the CPU needs a C++ compiler (g++ or clang++) and none is on "
                              "PATH; install one or set compile=off")


# Checks that involve several keys, run in this order after every key passed on its own.
RULES: list[Callable[[dict], Optional[str]]] = [
    _cuda_exists, _gpu_loader, _execution, _norm_fits_model, _probe_layer, _gn_groups, _warmup_fits, _augment_val,
    _digits_split,
    _train_split_fits, _final_epochs, _eval_crop,
]

# The commands whose configs this schema checks, by their config file's name (configs/<name>.yaml).
TRAIN = Command("the top-level keys are", "the config", TOP, SECTIONS, tuple(GROUPS), tuple(RULES))
EVALUATION = Command("python -m gnrepro.evaluate takes", "configs/evaluate.yaml", EVALUATE, {},
                     ("model", "conv", "norm", "data"), (_cuda_exists, _gpu_loader, _norm_fits_model, _gn_groups))
COMMANDS = {"train": TRAIN, "evaluate": EVALUATION}

assert tuple(GROUPS["norm"].options) == NORMS, "every norm of gnrepro.layers.norm_registry is declared here"
