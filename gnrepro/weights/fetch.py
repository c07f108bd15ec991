"""Where a weight file comes from: a local path, or an URL downloaded once into a cache folder.

The cache is ``$GNREPRO_WEIGHTS_CACHE`` or ``~/.cache/gnrepro/weights``. A download is written to a
temporary file and renamed, so an interrupted one never looks complete; a checksum given by the
publisher (torch.hub's convention: the first hex digits of the file's SHA-256, in its name) is
checked on every use. Without network the error is one line naming the URL and where to put a copy
downloaded by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from gnrepro.errors import ConfigError


def cache_dir() -> Path:
    return Path(os.environ.get("GNREPRO_WEIGHTS_CACHE") or Path.home() / ".cache" / "gnrepro" / "weights")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, prefix: str | None, url: str) -> None:
    if prefix and not sha256(path).startswith(prefix.lower()):
        raise ConfigError(f"{path} does not match the published checksum of {url} (SHA-256 should start with "
                          f"{prefix}); delete it and download it again")


def is_url(source: str) -> bool:
    return urlparse(str(source)).scheme in ("http", "https", "file", "ftp")


def fetch(url: str, sha256_prefix: str | None = None) -> Path:
    """The local copy of ``url`` in the cache, downloading it the first time."""
    target = cache_dir() / Path(urlparse(url).path).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False)
        try:
            with tmp, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
            check_sha256(Path(tmp.name), sha256_prefix, url)
            os.replace(tmp.name, target)
        except (urllib.error.URLError, OSError, ValueError) as err:
            Path(tmp.name).unlink(missing_ok=True)
            reason = getattr(err, "reason", None) or err
            raise ConfigError(f"cannot download {url} ({reason}); download it by hand to {target} "
                              f"(or pass the file's path instead of the name)") from None
        except ConfigError:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    check_sha256(target, sha256_prefix, url)
    return target
