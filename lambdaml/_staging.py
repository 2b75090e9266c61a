"""Client side of file inputs: local files given for file inputs become URLs a replica can fetch.

A small file is sent inline as a ``data:`` URI; a larger one is uploaded once to the
``staging/`` prefix of the output location, named by its content hash.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

from lambdaml._file_basics import MiB, data_uri, inline_limit_bytes, output_location, replace_in


def _send_local(path: pathlib.Path) -> str:
    """A URL for a local file: inline when small, else uploaded to the staging prefix of the output store."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    if path.stat().st_size <= inline_limit_bytes():
        return data_uri(path)
    location = output_location(None)
    if location is None:
        raise ValueError(
            f"{path} is larger than {inline_limit_bytes() / MiB:.1f} MiB, so it must be uploaded first: "
            "set LAMBDAML_OUTPUT_URL=s3://bucket/prefix (or gs://...) and lambdaml stages it there"
        )
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()[:16]
    url = f"{location}/staging/{digest}/{path.name}"
    import fsspec  # only for a file too big to inline: importing lambdaml stays light

    fs, remote = fsspec.core.url_to_fs(url)
    fs.put_file(str(path), remote)
    return url


def send_local_files(inputs: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """Client side: local files given for file inputs become URLs the replica can fetch."""

    def convert(value: Any) -> Any:
        if isinstance(value, pathlib.PurePath):
            return _send_local(pathlib.Path(value))
        if isinstance(value, str) and ":" not in value.split("/", 1)[0] and pathlib.Path(value).is_file():
            return _send_local(pathlib.Path(value))
        return value

    return {
        name: replace_in(value, (str, pathlib.PurePath), convert) if name in fields else value
        for name, value in inputs.items()
    }
