"""``lambdaml.files.cached``: model weights downloaded once per node.

Entries live under ``LAMBDAML_CACHE_DIR`` (default ``~/.cache/lambdaml/weights``)
in a folder named by the SHA-256 of the URL. A per-entry file lock makes
replicas that start together on one node wait for a single download, which
lands in a temporary name and is renamed into place, so nobody sees half a
file. Each use refreshes the entry's timestamp; when the cache grows past
``LAMBDAML_CACHE_MAX_BYTES`` (default 50 GiB), least recently used entries
that no one is downloading are removed.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import time
from urllib.parse import unquote, urlsplit

from filelock import FileLock, Timeout


def cache_dir() -> pathlib.Path:
    default = pathlib.Path.home() / ".cache" / "lambdaml" / "weights"
    return pathlib.Path(os.environ.get("LAMBDAML_CACHE_DIR") or default)


def cache_limit_bytes() -> int:
    raw = os.environ.get("LAMBDAML_CACHE_MAX_BYTES", "")
    return int(raw) if raw.strip() else 50 * 1024**3


def _entry_size(entry: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())


def _evict(root: pathlib.Path, keep: pathlib.Path, limit: int) -> None:
    entries = [e for e in root.iterdir() if e.is_dir() and not e.name.endswith(".partial")]
    sizes = {e: _entry_size(e) for e in entries}
    total = sum(sizes.values())
    for entry in sorted(entries, key=lambda e: e.stat().st_mtime):  # least recently used first
        if total <= limit:
            return
        if entry == keep:
            continue
        try:
            with FileLock(str(entry) + ".lock", timeout=0):
                shutil.rmtree(entry, ignore_errors=True)
        except Timeout:  # someone is using or fetching it right now
            continue
        total -= sizes[entry]


def cached(url: str) -> pathlib.Path:
    """A local copy of ``url`` (s3://, gs://, http(s)://, any fsspec URL), fetched once per node.

    Call it in ``setup()``: ``weights = lambdaml.files.cached("s3://bucket/model.safetensors")``.
    """
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / hashlib.sha256(url.encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(urlsplit(url).path.rsplit("/", 1)[-1])) or "file"
    target = entry / name
    with FileLock(str(entry) + ".lock"):
        if not target.is_file():
            partial = root / f"{entry.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            import fsspec  # here: describing a model (lambdaml.files) must not import it

            fs, path = fsspec.core.url_to_fs(url)
            fs.get_file(path, str(partial / name))
            shutil.rmtree(entry, ignore_errors=True)  # a damaged earlier entry
            partial.rename(entry)
        now = time.time()
        os.utime(entry, (now, now))
    _evict(root, entry, cache_limit_bytes())
    return target
