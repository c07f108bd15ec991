"""A training-time probe of one layer's responses, for the GN paper's Figure 6 (Sec. 4.1, "VGG
models": the evolution of the distribution of conv5_3's output, before normalization and ReLU,
drawn as its 1, 20, 80 and 99 percentiles over training, for VGG-16 without normalization, with BN
and with GN).

Every ``every_steps`` training steps, a forward hook on the layer takes a random sample of
``samples`` positions of its output (all of them when the output is smaller; images, channels and
pixels alike) and records the percentiles as one line of ``probe.jsonl`` in the run folder. Only
training forwards count (training mode with gradients on): evaluation and precise-BN passes do not.
Sampling draws from the probe's own generator, so a probed run trains exactly as an unprobed one;
that generator is seeded afresh for each record from (seed, step), so a resumed run samples the
same positions at each step as a straight run (one generator seeded once per launch restarted its
stream on every resume: the records after a resume were not the straight run's).
The file is rewritten atomically at every checkpoint with the lines up to that step, so after a
kill and a resume it never holds a step twice.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gnrepro import runfiles
from gnrepro.errors import ConfigError

FILE = "probe.jsonl"
PERCENTILES = (1, 20, 80, 99)  # the paper's Figure 6


def resolve_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """``(module path, module)`` for a layer name: a model alias (VGG's ``conv5_3``) or a module path."""
    aliases = getattr(model, "layer_aliases", {})
    path = aliases.get(name, name)
    try:
        return path, model.get_submodule(path)
    except AttributeError:
        hint = f"a layer name ({', '.join(aliases)}) or " if aliases else ""
        raise ConfigError(f"probe.layer={name!r} is not a layer of this model; use {hint}a module path "
                          f"such as {next(n for n, _ in model.named_modules() if n)!r}") from None


def sample_percentiles(values: torch.Tensor, samples: int | None, percentiles=PERCENTILES,
                       generator: torch.Generator | None = None) -> list[float]:
    """Percentiles (numpy's default linear interpolation) of ``samples`` random entries of ``values``
    drawn with replacement, or of all of them when ``samples`` is None or not smaller."""
    flat = values.detach().reshape(-1)
    if samples is not None and samples < flat.numel():
        idx = torch.randint(flat.numel(), (samples,), generator=generator).to(flat.device)
        flat = flat[idx]
    q = torch.tensor([p / 100 for p in percentiles], dtype=torch.float64, device=flat.device)
    return torch.quantile(flat.to(torch.float64), q).tolist()


class PercentileProbe:
    """Records ``percentiles`` of ``layer``'s output every ``every_steps`` training steps (step 1,
    1 + every_steps, ...). ``start_step`` is the number of steps already trained (a resumed run)."""

    def __init__(self, model: nn.Module, layer: str, every_steps: int, samples: int | None, run_dir: Path, *,
                 percentiles=PERCENTILES, seed: int = 0, start_step: int = 0):
        self.layer, (self.path, module) = layer, resolve_layer(model, layer)
        self.every, self.samples, self.percentiles = every_steps, samples, tuple(percentiles)
        self.file = Path(run_dir) / FILE
        self.step = start_step
        self.seed = seed
        self.rows = [r for r in runfiles.read_jsonl(self.file, index="step") if r["step"] <= start_step] if self.file.is_file() else []
        self.handle = module.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        self.step += 1
        if (self.step - 1) % self.every:
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)  # the step's own stream
        values = sample_percentiles(output, self.samples, self.percentiles, generator)
        self.rows.append({"step": self.step, "layer": self.layer, "module": self.path,
                          **{f"p{p:g}": v for p, v in zip(self.percentiles, values)}})

    def flush(self) -> None:
        runfiles.write_jsonl(self.file, self.rows)

    def close(self) -> None:
        self.handle.remove()


def attach_probe(model: nn.Module, probe_cfg, run_dir: Path, seed: int, start_step: int) -> PercentileProbe | None:
    """The probe ``probe_cfg`` asks for, or None when ``probe.every_steps`` is 0 (off)."""
    if not probe_cfg.get("every_steps"):
        return None
    return PercentileProbe(model, probe_cfg.layer, probe_cfg.every_steps, probe_cfg.samples, run_dir,
                           percentiles=probe_cfg.percentiles, seed=seed, start_step=start_step)
