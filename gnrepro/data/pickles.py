"""Reading pickled data files without running code from them.

CIFAR's python batches (``cifar-10-batches-py/``, ``cifar-100-python/``) are pickles, and ``pickle``
calls whatever a file names. This unpickler resolves only what those batches hold: plain
containers, strings, bytes and numbers (no lookup needed) and numpy arrays (numpy's array
reconstruction and dtypes). Anything else is refused, so a crafted file cannot run its payload.
Checksums are not needed for that, so small fake copies (gnrepro.data.fake) load as well.
"""
from __future__ import annotations

import pickle
from pathlib import Path

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class RefusedPickle(pickle.UnpicklingError):
    """The file asks for something other than containers, numbers, strings and arrays."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise RefusedPickle(f"it asks for {module}.{name}, which a data file never needs")
        return super().find_class(module, name)


def load_data_pickle(path: Path):
    """Unpickle ``path`` allowing only plain data and numpy arrays (Python 2 strings as latin1)."""
    with open(path, "rb") as f:
        return _DataUnpickler(f, encoding="latin1").load()
