"""The one schema of the training and evaluation configs, on pydantic v2: one model per config group,
a discriminated union (on ``name``) for the options of a group, and the rules across keys as the
command model's validator. It runs before any data or model is built.

Why: a value with the wrong type or range must never reach the trainer, where it either crashes with
a traceback (``seed=-1``) or silently changes the meaning of a run (``optim.milestones=[1.5]`` never
drops the LR, the paper's Sec. 4.1 schedule). Every model forbids undeclared keys (a typo or
``+optim.lr=0.5`` would otherwise be stored in config.yaml and ignored), is strict (``batch=two``,
``progress=1`` refused) and refuses inf/NaN. Every error becomes one line naming the key, the value
and a valid example (``check``).

Adding a key: a field in its group's model below (``Int``, ``Float``, ``Bool``, ``Choice``, ``Str``,
``Floats``, ``Device``) and a commented default in its yaml; a rule across keys goes into ``RULES``.
Adding a norm: one entry in gnrepro.layers.norm_registry (its ``options`` name its keys, typed here in
``NORM_OPTIONS``) and its configs/norm/<name>.yaml; the norm union is built from the registry.
Adding a model or data set: a model class with a ``name`` Literal, listed in ``MODELS`` or ``DATA``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional, Union

from annotated_types import Interval, Len
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      ValidationError, ValidationInfo, WrapValidator, create_model, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from gnrepro.data.device_feed import LOADERS
from gnrepro.engine.execution import COMPILE_MODES, PRECISIONS
from gnrepro.errors import ConfigError, UserError
from gnrepro.layers.norm_registry import NORM_KINDS
from gnrepro.weights.formats import FORMATS as WEIGHT_FORMATS

MISSING = "???"  # OmegaConf's mark of a value that must be given


# ----------------------------------------------------------------------------------- field types
# Each type carries the words of its one-line error: what it accepts and a value to suggest.

def _explained(inner, expected: str, eg: str, null: bool = False, unset_ok: bool = False):
    """``inner`` (or None where ``null``) whose failures say ``must be <expected>`` and suggest ``eg``;
    ``unset_ok``: ``???`` passes (checked later by its user, e.g. data.root)."""
    def explain(value, handler):
        if isinstance(value, str) and value == MISSING and not unset_ok:
            raise PydanticCustomError("not_set", "not set", {"eg": eg})
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("bad_value", "must be {expected}", {"expected": expected, "eg": eg}) from None
    return Annotated[Optional[inner] if null else inner, WrapValidator(explain)]


def _int(lo: int, hi: Optional[int]):
    return Annotated[StrictInt, Interval(ge=lo, le=hi)]


def Int(lo: int = 1, hi: Optional[int] = None, eg: Optional[str] = None, null: bool = False):
    words = (f"an integer in [{lo}, {hi}]" if hi is not None
             else "a positive integer" if lo == 1 else f"an integer >= {lo}")
    return _explained(_int(lo, hi), words, eg or str(max(lo, 2)), null)


def _float(gt=None, ge=None, lt=None):
    return Annotated[Union[StrictFloat, StrictInt], AfterValidator(_finite), Interval(gt=gt, ge=ge, lt=lt)]


def _finite(value):
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _float_words(gt=None, ge=None, lt=None) -> str:
    if lt is not None and (ge is not None or gt is not None):
        return f"a finite number in {f'[{ge:g}' if ge is not None else f'({gt:g}'}, {lt:g})"
    bounds = [f">= {ge:g}" if ge is not None else "", f"> {gt:g}" if gt is not None else "", f"< {lt:g}" if lt is not None else ""]
    return " ".join(["a finite number", *[b for b in bounds if b]])


def Float(gt=None, ge=None, lt=None, eg: str = "0.1"):
    return _explained(_float(gt, ge, lt), _float_words(gt, ge, lt), eg)


def Floats(gt=None, ge=None, lt=None, length: Optional[int] = None, increasing: bool = False, eg="[0.3,0.6,0.9]"):
    """A list of numbers; ``length`` fixes its length, ``increasing`` its order."""
    def ordered(values):
        if increasing and any(a >= b for a, b in zip(values, values[1:])):
            raise ValueError("not increasing")
        return values
    inner = Annotated[list[_float(gt, ge, lt)], Len(length or 0, length), AfterValidator(ordered)]
    words = (f"a list of {f'{length} ' if length else ''}numbers, each {_float_words(gt, ge, lt)}"
             f"{', strictly increasing' if increasing else ''}")
    return _explained(inner, words, eg)


Bool = _explained(StrictBool, "true or false", "false")


def Choice(*values):
    """One of ``values``, of the same type too (``true`` is not ``1``; pydantic's Literal would take 1)."""
    def one_of(value):
        if not any(value == v and type(value) is type(v) for v in values):
            raise ValueError("not a choice")
        return value
    words = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return _explained(Annotated[Any, AfterValidator(one_of)], "one of " + ", ".join(words), words[0])


def Str(eg: str = "NAME", null: bool = False, unset_ok: bool = False):
    return _explained(Annotated[StrictStr, Field(pattern=r"\S")], "a non-empty string", eg, null, unset_ok)


Device = _explained(Annotated[StrictStr, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")], "auto, cpu, cuda or cuda:N", "auto")


class Keys(BaseModel):
    """A block of keys: nothing undeclared, no coercion, no inf/NaN."""
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ------------------------------------------------------------------------------- sections, groups

class Optim(Keys):  # the paper's SGD schedule (Sec. 4.1; gnrepro/engine/schedule.py)
    base_lr: Float(gt=0)
    momentum: Float(ge=0, lt=1, eg="0.9")
    weight_decay: Float(ge=0, eg="1e-4")
    milestones: Floats(gt=0, lt=1, increasing=True)
    warmup_epochs: Float(ge=0, eg="5")
    warmup: Choice("auto", "always", "never")
    fused: Choice("auto", True, False)


class Probe(Keys):  # Figure 6's response percentiles (gnrepro/engine/probe.py)
    every_steps: Int(0, eg="1000")
    layer: Str(eg="conv5_3", null=True)
    samples: Int(1, eg="4096", null=True)
    percentiles: Floats(ge=0, eg="[1,20,80,99]")


class Augment(Keys):  # the digits proxy's per-image warp and noise (gnrepro/data/digits.py)
    rotate: Float(ge=0, eg="15")
    scale: Float(ge=0, lt=1, eg="0.15")
    shear: Float(ge=0, eg="10")
    translate: Float(ge=0, eg="1")
    noise: Float(ge=0, eg="0.2")
    contrast: Float(ge=1, eg="3")
    brightness: Float(ge=0, eg="0.5")


DEPTHS = {"resnet14": 14, "resnet26": 26, "resnet50": 50, "resnet101": 101, "vgg16": 16}


class Model(Keys):
    depth: Int()
    small_input: Bool

    @model_validator(mode="after")
    def _depth_is_the_names(self):  # resnet101 has depth 101: a contradiction is refused, not guessed
        want = DEPTHS[self.name]
        if self.depth != want:
            raise ConfigError(f"model.depth={self.depth!r} contradicts model.name={self.name} (depth {want}); "
                              "pick another model with model=<option> instead")
        return self


class ResNet(Model):
    name: Literal["resnet14", "resnet26", "resnet50", "resnet101"]


class VGG(Model):
    name: Literal["vgg16"]
    arch: Choice("vgg")
    classifier_width: Int(eg="512")
    pool_size: Int(eg="1")
    dropout: Float(ge=0, lt=1, eg="0.5")


class Conv(Keys):
    name: Literal["plain"]


class WSConv(Keys):  # weight standardization (Qiao et al. 2019; gnrepro/layers/convs.py)
    name: Literal["ws"]
    eps: Float(gt=0, eg="1e-5")


# The types of the norms' own options; which norm takes which is the registry's (NormKind.options).
NORM_OPTIONS = {
    "sync": Bool, "frozen": Bool,
    "r_max": Float(ge=1, eg="1.5"), "d_max": Float(ge=0, eg="0.5"), "relax_start": Int(0, eg="0"), "relax_steps": Int(0, eg="0"),
    "groups": Int(null=True), "channels_per_group": Int(null=True),
}
# Keys of every norm with batch statistics: the statistics used at evaluation (gnrepro/layers/precise_bn.py).
EVAL_STATS = {"eval_stats": Choice("running", "precise"), "precise_batches": Int(eg="100")}


def _norm_model(name: str):
    kind = NORM_KINDS[name]
    keys = {k: NORM_OPTIONS[k] for k in kind.options} | (EVAL_STATS if kind.batch_stats else {})
    return create_model(f"Norm_{name}", __base__=Keys, name=(Literal[name], ...), **{k: (t, ...) for k, t in keys.items()})


class Loader(Keys):  # DataLoader settings of every data set on disk
    epochs: Int()
    small_input: Bool
    subset: Int(null=True)
    root: Str(unset_ok=True)  # ``???`` until given: the data builder names what to put there
    download: Bool
    num_workers: Int(0)
    pin_memory: Choice("auto", True, False)
    persistent_workers: Bool
    prefetch_factor: Int(null=True)
    mean: Floats(ge=0, length=3, eg="[0.485,0.456,0.406]")
    std: Floats(gt=0, length=3, eg="[0.229,0.224,0.225]")
    train_crop: Int()


class Photos(Loader):  # the paper's ImageNet transforms (Sec. 4.1)
    name: Literal["imagenet", "pets"]
    eval_resize: Int()
    eval_crop: Int()
    skip_bad: Bool
    loader: Choice(*LOADERS)  # how batches reach the device (gnrepro/data/device_feed.py)


class Imagenette(Photos):
    name: Literal["imagenette"]
    size: Choice("full", "320px", "160px")


class Cifar(Loader):
    name: Literal["cifar10", "cifar100"]
    crop_padding: Int(0)


class Digits(Keys):  # the embedded proxy (gnrepro/data/digits.py)
    name: Literal["digits"]
    epochs: Int()
    small_input: Bool
    subset: Int(null=True)
    image_size: Int(8, 256)
    val_fraction: Float(gt=0, lt=1, eg="0.2")
    split_seed: Int(0, 2**32 - 1, eg="0")
    num_workers: Int(0)
    augment: Optional[Augment]
    augment_val: Int(0, eg="4")


class NoLogger(Keys):
    name: Literal["none"]


class Wandb(Keys):
    name: Literal["wandb"]
    project: Str()
    entity: Str(null=True)
    mode: Choice("offline", "online", "disabled")
    init_timeout: Float(gt=0, eg="30")


# Each group's options, in the order error messages list them; the first ``name`` Literal of a class
# is its option.
MODELS = (ResNet, VGG)
NORMS = tuple(_norm_model(name) for name in NORM_KINDS)
CONVS = (Conv, WSConv)
DATA = (Digits, Photos, Imagenette, Cifar)
LOGGERS = (NoLogger, Wandb)
GROUPS = {"model": MODELS, "conv": CONVS, "norm": NORMS, "data": DATA, "logger": LOGGERS}
NAMED_BY_FILE = {"model", "data", "logger"}  # <group>.name must be the chosen file (norm=gn_ws is norm.name gn)


def options(group: str) -> list[str]:
    return [name for cls in GROUPS[group] for name in cls.model_fields["name"].annotation.__args__]


def _union(group: str):
    return Annotated[Union[GROUPS[group]], Field(discriminator="name")]


def _option_keys(group: str, option: str) -> list[str]:
    return next(list(c.model_fields) for c in GROUPS[group] if option in c.model_fields["name"].annotation.__args__)


# ----------------------------------------------------------------------------------------- commands

class Command(Keys):
    """A command's config: its groups first (so a wrong option is named before its keys), then the rest.
    Validation context: ``choices`` (Hydra's chosen file of each group) and ``notes`` (filled by rules)."""

    @field_validator(*GROUPS, mode="before", check_fields=False)
    @classmethod
    def _an_option(cls, values, info: ValidationInfo):
        group = info.field_name
        if not isinstance(values, dict):
            raise ConfigError(f"{group} must be a config group, got {values!r}; pick one with {group}=<option>")
        option = values.get("name")
        if option not in options(group):
            raise ConfigError(f"unknown {group}.name {option!r}; choose one of: {', '.join(options(group))}")
        choice = (info.context or {}).get("choices", {}).get(group)
        if group in NAMED_BY_FILE and choice is not None and option != choice:
            raise ConfigError(f"{group}.name={option} does not match {group}={choice}; "
                              f"pick the {group} with {group}={option} instead of setting {group}.name")
        return values

    @field_validator("optim", "probe", mode="before", check_fields=False)
    @classmethod
    def _a_section(cls, values, info: ValidationInfo):
        if not isinstance(values, dict):
            keys = ", ".join(cls.model_fields[info.field_name].annotation.model_fields)
            raise ConfigError(f"{info.field_name} must hold the keys {keys}, got {values!r}")
        return values

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo):
        values = self.model_dump()
        for rule in self.rules():
            note = rule(values)
            if note and info.context is not None:
                info.context.setdefault("notes", []).append(note)
        return self

    @classmethod
    def rules(cls) -> list[Callable[[dict], Optional[str]]]:
        return []


class Train(Command):  # configs/train.yaml
    model: _union("model")
    norm: _union("norm")
    conv: _union("conv")
    data: _union("data")
    logger: _union("logger")
    optim: Optim
    probe: Probe
    batch: Int()                              # images per worker (paper Sec. 4.1)
    workers: Int()
    epochs: Int()
    final_epochs: Int()
    seed: Int(0, 2**31 - 1, eg="0")           # numpy seeds must be non-negative 32-bit
    deterministic: Bool
    device: Device
    eval_batch: Int()
    progress: Bool
    checkpoint_steps: Int(0)
    keep_checkpoint: Choice("last", "weights", "none")  # what a completed run keeps (gnrepro/engine/checkpoint.py)
    progress_seconds: Float(ge=0, eg="60")    # off a terminal: a progress line at most this often (gnrepro/engine/loop.py)
    results_dir: Str(eg="outputs/runs")
    debug: Bool
    init: Str(eg="tv-resnet50", null=True)    # released weights to fine-tune from (gnrepro/weights/catalog.py)
    init_format: Choice("auto", *WEIGHT_FORMATS)
    # how a step executes (gnrepro/engine/execution.py, gnrepro/engine/loop.py); only precision changes results
    log_every: Int(eg="50")
    precision: Choice(*PRECISIONS)
    channels_last: Bool
    compile: Choice(*COMPILE_MODES)
    cudnn_benchmark: Choice("auto", True, False)

    @classmethod
    def rules(cls):
        return RULES


class Evaluate(Command):  # configs/evaluate.yaml: its own top level, the same groups
    model: _union("model")
    conv: _union("conv")
    norm: _union("norm")
    data: _union("data")
    weights: Str(eg="R-50-GN", unset_ok=True)  # ``???`` until given: the evaluator names the choices
    weights_format: Choice("auto", *WEIGHT_FORMATS)
    workers: Int()
    device: Device
    eval_batch: Int()
    results_dir: Str(eg="outputs/runs")
    debug: Bool

    @classmethod
    def rules(cls):
        return [_cuda_exists, _gpu_loader, _norm_fits_model, _gn_groups]


@dataclass(frozen=True)
class Spec:
    """How one command's messages speak of it."""
    model: type[Command]
    keys_phrase: str  # how an unknown top-level key's message introduces the known ones
    where: str        # where a missing top-level key should be restored

    @property
    def sections(self) -> dict[str, list[str]]:
        return {k: list(f.annotation.model_fields) for k, f in self.model.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, Keys)}

    @property
    def groups(self) -> list[str]:
        return [k for k in self.model.model_fields if k in GROUPS]

    @property
    def top(self) -> list[str]:
        return [k for k in self.model.model_fields if k not in GROUPS and k not in self.sections]


TRAIN = Spec(Train, "the top-level keys are", "the config")
EVALUATION = Spec(Evaluate, "python -m gnrepro.evaluate takes", "configs/evaluate.yaml")
COMMANDS = {"train": TRAIN, "evaluate": EVALUATION}  # by their config file's name (configs/<name>.yaml)


def unknown_key(key: str, command: Optional[Spec] = None) -> str:
    """The message for a key that ``command``'s config (training's by default) does not have
    (Hydra refuses those without ``+``)."""
    command = command or TRAIN
    head, _, rest = key.partition(".")
    if rest and (head in command.sections or head in command.groups):
        known = ", ".join(command.sections[head]) if head in command.sections else f"each option's keys: configs/{head}/"
        return f"unknown key {key}: {head} has no {rest!r} ({known}); check the spelling or remove it"
    return (f"unknown key {key}; {command.keys_phrase}: {', '.join([*command.top, *command.sections, *command.groups])}; "
            f"check the spelling or remove it")


def _one_line(error: dict, command: Spec) -> str:
    """One pydantic error as the line a user reads: the key, the value, the fix."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error" and isinstance(ctx.get("error"), UserError):  # a rule's or a validator's own line
        return str(ctx["error"])
    loc = [str(part) for part in error["loc"]]
    in_group = loc[0] in GROUPS and len(loc) > 1
    parts = [loc[0], *loc[2:]] if in_group else loc  # loc[1] of a group is the option's name (the union's tag)
    key = ".".join(parts)
    if kind == "bad_value":
        return f"{key} must be {ctx['expected']}, got {error['input']!r}; set e.g. {key}={ctx['eg']}"
    if kind == "not_set":
        return f"{key} is not set; set e.g. {key}={ctx['eg']}"
    if kind == "extra_forbidden":
        if in_group and len(parts) == 2:
            known = ["name", *[k for k in _option_keys(loc[0], loc[1]) if k != "name"]]
            return f"{loc[0]} {loc[1]!r} has no {parts[1]} (its keys: {', '.join(known)}); remove {key} from the command line"
        return unknown_key(key, command)
    if kind == "missing":
        where = ".".join(parts[:-1]) if len(parts) > 2 else f"{loc[0]}={loc[1]}" if in_group else (
            loc[0] if len(loc) > 1 else command.where)
        return f"{key} is missing from the config ({where}); restore it in its yaml file"
    if kind == "model_type":  # a nested block (data.augment) given a scalar
        if error["input"] == MISSING:
            return f"{key} is not set; set e.g. {key}=null"
        keys = ", ".join(next(c for c in Keys.__subclasses__() if c.__name__ == ctx["class_name"]).model_fields)
        return f"{key} must be a block of keys {keys}, got {error['input']!r}; set e.g. {key}=null"
    return f"{key}: {error['msg']} (got {error['input']!r})"


def check(cfg: dict, choices: Optional[dict] = None, command: Optional[Spec] = None) -> list[str]:
    """Raise ConfigError naming the first bad value of the resolved config ``cfg`` (a plain dict) of
    ``command`` (training's by default).

    ``choices`` are the chosen files of each group (Hydra's ``hydra.runtime.choices``), when known.
    Returns notes: one line each for legal but unusual values, saying what they do.
    """
    command = command or TRAIN
    context = {"choices": choices or {}, "notes": []}
    try:
        command.model.model_validate(cfg, context=context)
    except ValidationError as err:
        errors = err.errors()  # in field order; a key that should not be there is named before one missing
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        raise ConfigError(_one_line((unknown or errors)[0], command)) from None
    return context["notes"]


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
    if cfg["precision"] == "tf32" and not _on_cuda(cfg["device"]):
        raise ConfigError(f"precision=tf32 runs float32 convolutions on a CUDA GPU's tensor cores, but device={cfg['device']} "
                          "is not one; use precision=fp32 (the same arithmetic on the CPU)")
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



def _on_cuda(device: str) -> bool:
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


# Checks that involve several keys, run in this order after every key passed on its own.
RULES: list[Callable[[dict], Optional[str]]] = [
    _cuda_exists, _gpu_loader, _execution, _norm_fits_model, _probe_layer, _gn_groups, _warmup_fits, _augment_val,
    _digits_split,
    _train_split_fits, _final_epochs, _eval_crop,
]
