"""How a model executes on its device: arithmetic precision, memory layout, graph compilation and
cuDNN autotuning (the config keys ``precision``, ``channels_last``, ``compile``, ``cudnn_benchmark``).

None of these changes the paper's math (Sec. 4.1): the same layers, the same SGD rule. They change
float rounding only, except ``precision=tf32|bf16|fp16``, whose coarser arithmetic is a
result-changing setting (the paper trained in fp32, the default here, with TF32 switched off). How much each setting
speeds up a step is measured by ``scripts/bench_throughput.py`` (docs/performance.md).
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

# precision= -> autocast's dtype (None: every op in 32-bit floats). fp32 is IEEE float32 everywhere, the
# paper's arithmetic; tf32 lets Ampere-and-later GPUs run fp32 convolutions and matmuls on tensor cores
# with a 10-bit mantissa, which cuDNN does by default: so fp32 must switch it off to be fp32.
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ("off", "default", "reduce-overhead")


def pick_device(name: str) -> torch.device:
    """The torch device for the config key ``device`` (``auto``: the GPU when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
# The settings that change a step's speed, with the paper's defaults (fp32, NCHW, eager); a config
# without a key (an older run record) executes as its default.
DEFAULTS = {"precision": "fp32", "channels_last": False, "compile": "off"}


@dataclass
class Execution:
    """The execution settings of one run, resolved for its device.

    ``autocast_dtype``: None runs every op in fp32; otherwise forward and loss run under
    ``torch.autocast`` (matmuls and convolutions in that dtype, reductions and losses in fp32).
    ``scaler``: fp16's GradScaler (its gradients underflow without loss scaling); None otherwise.
    """
    device: torch.device
    autocast_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    compile_mode: str = "off"
    scaler: Optional[torch.amp.GradScaler] = None

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch moved to the device in the model's memory layout."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.dim() == 4 else images

    def place(self, model: nn.Module) -> nn.Module:
        """Move ``model`` (in place) to the device and memory layout."""
        return model.to(self.device, memory_format=self.memory_format())

    def compile(self, model: nn.Module, backend: str = "inductor") -> nn.Module:
        """The module to train with: ``model`` itself, or its ``torch.compile`` wrapper (sharing its
        parameters, so checkpoints and evaluation keep using the plain module). Compile after
        DistributedDataParallel wraps the model, so its buckets split the graph (torch's DDP docs).
        ``backend``: Inductor for runs; the benchmark's self-check passes ``eager`` (dynamo's graph
        capture without code generation, where modes do not apply)."""
        if self.compile_mode == "off":
            return model
        mode = None if self.compile_mode == "default" or backend != "inductor" else self.compile_mode
        return torch.compile(model, mode=mode, backend=backend)


def resolve_cudnn_benchmark(value, deterministic: bool) -> bool:
    """``auto`` autotunes convolutions (cuDNN picks the fastest algorithm per shape, which may
    differ between runs) unless the run must be deterministic."""
    return (not deterministic) if value == "auto" else bool(value)


def set_float32_math(precision: str) -> None:
    """Process-wide: float32 convolutions and matmuls in IEEE fp32 (``ieee``), or in TF32 only for
    ``precision=tf32``. torch's own default is TF32 for cuDNN convolutions, so fp32 must say so. Uses
    torch's ``fp32_precision`` switches only (mixing them with the legacy ``allow_tf32`` flags is an error)."""
    mode = "tf32" if precision == "tf32" else "ieee"
    # Each switch by name: torch 2.11 (the lent GPU image's) keeps cuDNN's convolutions at their
    # default "tf32" when only the parent ``torch.backends.cudnn`` switch is set (2.14 passes it on),
    # and a child set earlier by anyone keeps its value under a parent's in both.
    torch.backends.cudnn.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode  # cuDNN's convolutions
    torch.backends.cudnn.rnn.fp32_precision = mode
    torch.backends.cuda.matmul.fp32_precision = mode  # cuBLAS's matmuls (the fc layer)


def build_execution(cfg, device: torch.device) -> Execution:
    """The run's ``Execution`` from its config; sets cuDNN's autotuning and the float32 math
    (``set_float32_math``) as process-wide switches."""
    torch.backends.cudnn.benchmark = resolve_cudnn_benchmark(cfg.get("cudnn_benchmark", "auto"), cfg.deterministic)
    precision, channels_last, compile_mode = (cfg.get(key, default) for key, default in DEFAULTS.items())
    set_float32_math(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return Execution(device, PRECISIONS[precision], bool(channels_last), compile_mode, scaler)


def compiler_available() -> bool:
    """torch.compile's CPU backend (Inductor) builds C++ kernels: it needs a C++ compiler."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))
