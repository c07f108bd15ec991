"""Where a weight file comes from: a local path, or an URL downloaded once into a cache folder.

The cache is ``$GNREPRO_WEIGHTS_CACHE`` or ``~/.cache/gnrepro/weights``. Each URL has its own
folder, named by the SHA-256 of the URL (issue 24, item 4): two sources whose files share a name
(``model.safetensors``, ``resnet50.pth``) never share a cached copy. Beside the file,
``source.json`` records the URL and the SHA-256 of what was downloaded; every later use re-checks
both, so a copy changed or replaced since it was downloaded is refused, not served.

The download itself is torch.hub's ``download_url_to_file`` (temporary file in the cache folder,
renamed when complete, so an interrupted download never looks complete; the publisher's checksum,
torch.hub's convention of the first hex digits of the file's SHA-256 in its name, checked before
the rename). Without network the error is one line naming the URL and where to put a copy
downloaded by hand (a file put there is taken as the URL's, its hash recorded; or pass the file's path).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch.hub

from gnrepro.errors import ConfigError

log = logging.getLogger("gnrepro")
RECORD = "source.json"  # beside each cached file: {"url": ..., "sha256": ...}


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


def cached_path(url: str) -> Path:
    """Where ``url``'s copy lives: ``<cache>/<first 16 hex digits of SHA-256(url)>/<file name>``."""
    name = Path(urlparse(url).path).name or "download"
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _record(target: Path) -> dict | None:
    """The download record beside ``target``: None if there is none; ``{}`` if it is damaged."""
    path = target.parent / RECORD
    if not os.path.lexists(path):
        return None
    try:
        record = json.loads(path.read_text(), parse_constant=lambda c: None)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    ok = isinstance(record, dict) and isinstance(record.get("url"), str) and isinstance(record.get("sha256"), str)
    return record if ok else {}


def _write_record(target: Path, url: str, digest: str) -> None:
    tmp = target.parent / f".{RECORD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"url": url, "sha256": digest}, indent=2) + "\n")
    os.replace(tmp, target.parent / RECORD)


def _check_cached(target: Path, url: str, sha256_prefix: str | None) -> None:
    """The cached copy of ``url`` must be the file downloaded from it, unchanged since."""
    record = _record(target)
    if not record or record["url"] != url:
        raise ConfigError(f"{target} has no record of being downloaded from {url}; delete {target.parent} "
                          f"to download it again")
    check_sha256(target, sha256_prefix, url)
    digest = sha256(target)
    if digest != record["sha256"]:
        raise ConfigError(f"{target} changed since it was downloaded from {url} (SHA-256 {digest[:12]}..., recorded "
                          f"{record['sha256'][:12]}...); delete {target.parent} to download it again")


def fetch(url: str, sha256_prefix: str | None = None) -> Path:
    """The local copy of ``url`` in the cache, downloading it the first time."""
    target = cached_path(url)
    if target.is_file() and _record(target) is not None:
        _check_cached(target, url, sha256_prefix)
        return target
    if target.is_file():  # put there by hand, as the no-network error says: taken as this URL's file
        check_sha256(target, sha256_prefix, url)
        log.warning("using %s, placed by hand for %s; its SHA-256 is recorded and re-checked from now on", target, url)
        _write_record(target, url, sha256(target))
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256_prefix, progress=False)
    except RuntimeError as err:  # torch.hub: 'invalid hash value (expected "...", got "...")'
        if "hash" not in str(err):
            raise
        _remove_empty(target.parent)
        raise ConfigError(f"the file downloaded from {url} does not match its published checksum (SHA-256 "
                          f"should start with {sha256_prefix}); nothing was kept; try again later or download it "
                          f"by hand to {target}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        _remove_empty(target.parent)
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
        raise ConfigError(f"cannot download {url} ({reason}); download it by hand to {target} "
                          f"(or pass the file's path instead of the name)") from None
    _write_record(target, url, sha256(target))
    return target


def _remove_empty(folder: Path) -> None:
    """A failed download leaves nothing: torch.hub removed its temp file; the URL's folder goes too."""
    try:
        folder.rmdir()
    except OSError:
        pass
