"""Reading pickled data files without running code from them, and without a forged length making
them allocate what the file does not hold.

CIFAR's python batches (``cifar-10-batches-py/``, ``cifar-100-python/``) are pickles, and ``pickle``
calls whatever a file names. This unpickler resolves only what those batches hold: plain
containers, strings, bytes and numbers (no lookup needed) and numpy arrays (numpy's array
reconstruction and dtypes). Anything else is refused, so a crafted file cannot run its payload.
Checksums are not needed for that, so small fake copies (gnrepro.data.fake) load as well.

Issue 24, item 3 (sizes checked before allocating): the file is read whole, at most ``MAX_BYTES``,
and unpickled from memory by the pure-Python unpickler, which reads a string or bytes opcode's
claimed length from the buffer instead of allocating it first (the C unpickler allocates 8 TiB for a
forged BINBYTES8 header and dies with MemoryError). A numpy array's header (shape and dtype) is
checked against the bytes the file really holds for it before numpy sees it.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import stat
from pathlib import Path

import numpy as np

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
MAX_BYTES = 1 << 30  # CIFAR-100's train file is 155 MB; no data pickle of ours is near 1 GiB


class RefusedPickle(pickle.UnpicklingError):
    """The file asks for something other than containers, numbers, strings and arrays."""


class _CheckedArray(np.ndarray):
    """What an array in the file is rebuilt as until its state is checked: numpy's ``__setstate__``
    would otherwise trust the header's shape."""

    def __setstate__(self, state):
        check_array_state(state)
        super().__setstate__(state)


def check_array_state(state) -> None:
    """UnpicklingError unless ``state`` (numpy's ``(version, shape, dtype, fortran, raw)``) describes an
    array of plain numbers whose bytes, shape x itemsize, are exactly the raw data the file holds."""
    if not (isinstance(state, tuple) and len(state) in (4, 5)):
        raise pickle.UnpicklingError("an array whose state is not numpy's")
    shape, dtype, raw = state[-4], state[-3], state[-1]
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise pickle.UnpicklingError(f"an array with shape {str(shape)[:40]}")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects, not of numbers")
    if not isinstance(raw, (bytes, bytearray, str)):
        raise pickle.UnpicklingError(f"an array whose data is a {type(raw).__name__}")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != len(raw):
        raise pickle.UnpicklingError(f"an array header claiming {claimed:,} bytes (shape {shape}) over "
                                     f"{len(raw):,} bytes of data")


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise RefusedPickle(f"it rebuilds a {getattr(subtype, '__name__', subtype)!s}, not a numpy array")
    return np.ndarray.__new__(_CheckedArray, (0,), dtype="b")


def _scalar(dtype, raw=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, (bytes, str)) \
            or len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return np.frombuffer(raw.encode("latin1") if isinstance(raw, str) else raw, dtype)[0]


class _DataUnpickler(pickle._Unpickler):  # the pure-Python unpickler: see the module docstring
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise RefusedPickle(f"it asks for {module}.{name}, which a data file never needs")
        if name == "_reconstruct":
            return _reconstruct
        if name == "scalar":
            return _scalar
        return super().find_class(module, name)


def read_bounded(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``; UnpicklingError if it is something else or too large
    (a FIFO is never waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise pickle.UnpicklingError("not a regular file")
        if info.st_size > limit:
            raise pickle.UnpicklingError(f"{info.st_size:,} bytes, more than a data file of this kind holds")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def plain(obj):
    """``obj`` with every checked array turned back into a plain ndarray (dict and list values)."""
    if isinstance(obj, _CheckedArray):
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def loads_data(data: bytes, encoding: str = "latin1", unpickler=_DataUnpickler):
    """Unpickle ``data`` (in memory) with ``unpickler``; a forged length never allocates more than
    ``data`` holds, and every pickling error is an UnpicklingError (MemoryError, RecursionError
    included: a file that claims more than it has, or nests without end)."""
    try:
        return plain(unpickler(io.BytesIO(data), encoding=encoding).load())
    except pickle.UnpicklingError:
        raise
    except (MemoryError, RecursionError, OverflowError, EOFError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, UnicodeDecodeError, struct_error()) as err:
        raise pickle.UnpicklingError(f"not a data pickle ({type(err).__name__})") from None


def struct_error():
    import struct

    return struct.error


def load_data_pickle(path: Path):
    """Unpickle ``path`` allowing only plain data and numpy arrays (Python 2 strings as latin1)."""
    return loads_data(read_bounded(path))
