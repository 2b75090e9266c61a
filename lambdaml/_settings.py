"""Settings read from the environment, in one place so every stage agrees.

Read at call time, not import time: tests and the CLI change the environment
after ``import lambdaml``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdaml._durations import parse_duration

CONTROL_APP = "lambdaml-control"  # the always-on Serve application that keeps the prediction records
SHUTDOWN_WAIT_S = 3600.0  # how long a stopping replica lets predictions finish when the model sets no timeout
CANARY_SUFFIX = ".canary"  # a canary's Serve application is `{name}.canary`: no model name has a dot
TRAINER_SUFFIX = "-train"  # a model's training function runs as the application `{name}-train` (Cog's name for it)
# On the control application's 404 for a path no model and no route of lambdaml's takes (it takes every
# other path): the client tells it from a model's own 404, as it told the ingress's plain-text one.
NO_ROUTE_HEADER = "x-lambdaml-no-route"
RESERVED_NAMES = frozenset({"v1", "ui", CONTROL_APP})  # routes and names no model may take


def _number(name: str, default: float, kind: type = int, what: str = "a whole number (a port)") -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def _int(name: str, default: int) -> int:
    return _number(name, default)


def _seconds(name: str, default: float) -> float:
    return _number(name, default, float, "a number of seconds")


@dataclass(frozen=True)
class ClusterSettings:
    """Where the embedded local cluster lives and which loopback ports it uses."""

    address: str | None
    temp_dir: Path
    ray_port: int
    http_port: int
    dashboard_port: int
    ingress: str  # "haproxy" or "python"
    num_cpus: int | None
    num_gpus: int | None
    warm_workers: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


def cluster_settings() -> ClusterSettings:
    """The cluster lambdaml talks to, from ``LAMBDAML_*`` (then ``RAY_ADDRESS``)."""
    address = os.environ.get("LAMBDAML_ADDRESS") or os.environ.get("RAY_ADDRESS") or None
    ingress = os.environ.get("LAMBDAML_INGRESS", "haproxy").lower()
    if ingress not in ("haproxy", "python"):
        raise ValueError(f"LAMBDAML_INGRESS must be 'haproxy' or 'python', got {ingress!r}")
    default_tmp = Path(tempfile.gettempdir()) / f"lambdaml-{os.getuid()}"
    num_cpus = os.environ.get("LAMBDAML_NUM_CPUS")
    num_gpus = os.environ.get("LAMBDAML_NUM_GPUS")
    return ClusterSettings(
        address=address,
        temp_dir=Path(os.environ.get("LAMBDAML_TEMP_DIR", str(default_tmp))),
        ray_port=_int("LAMBDAML_RAY_PORT", 6380),
        http_port=_int("LAMBDAML_HTTP_PORT", 8000),
        dashboard_port=_int("LAMBDAML_DASHBOARD_PORT", 8265),
        ingress=ingress,
        num_cpus=int(num_cpus) if num_cpus else None,
        num_gpus=int(num_gpus) if num_gpus else None,
        warm_workers=_int("LAMBDAML_WARM_WORKERS", 2),
    )


def http_base_url() -> str:
    """Base URL of the predictions API: ``LAMBDAML_URL`` or the embedded cluster's."""
    url = os.environ.get("LAMBDAML_URL")
    return url.rstrip("/") if url else cluster_settings().http_url


def debug_enabled() -> bool:
    """``LAMBDAML_DEBUG=1`` adds tracebacks to failed predictions, and Serve's access log to the replicas' logs."""
    return os.environ.get("LAMBDAML_DEBUG", "").lower() in ("1", "true", "yes")


def signing_key_file() -> Path:
    """The embedded cluster's artifact signing key (``lambdaml._signing``): kept where it outlives the cluster."""
    return Path(os.environ.get("LAMBDAML_SIGNING_KEY_FILE") or Path.home() / ".lambdaml" / "signing-key")


def artifact_store_url() -> str:
    """Where artifacts live: ``LAMBDAML_ARTIFACTS`` (any fsspec URL), else ``~/.lambdaml/artifacts``."""
    return os.environ.get("LAMBDAML_ARTIFACTS") or str(Path.home() / ".lambdaml" / "artifacts")


def sync_wait() -> float:
    """How long ``POST /predictions`` holds a caller without ``Prefer``: ``LAMBDAML_SYNC_WAIT`` (60 s)."""
    return _seconds("LAMBDAML_SYNC_WAIT", 60.0)


def max_request_bytes() -> int:
    """The largest request body a model replica reads: ``LAMBDAML_MAX_REQUEST_BYTES`` (8 MiB).

    Bodies carry inputs, ``data:`` URIs included (1 MiB files by default); bigger files
    go as URLs. Past it a caller gets 413 before the body is read.
    """
    return _int("LAMBDAML_MAX_REQUEST_BYTES", 8 * 1024 * 1024)


def cancel_grace() -> float:
    """How long a canceled predict may keep running before its replica is replaced: ``LAMBDAML_CANCEL_GRACE`` (10 s)."""
    return _seconds("LAMBDAML_CANCEL_GRACE", 10.0)


def auth_required() -> bool:
    """``LAMBDAML_AUTH=required``: every request needs a token, even before one exists (unset: once one exists)."""
    raw = (os.environ.get("LAMBDAML_AUTH") or "").strip().lower()
    if raw not in ("", "required"):
        raise ValueError(f"LAMBDAML_AUTH must be 'required' or unset, got {raw!r}")
    return raw == "required"


def retention() -> float:
    """How long a record keeps its input, output and logs: ``LAMBDAML_RETENTION`` (``7d``; ``12h``, ``3600``...)."""
    raw = os.environ.get("LAMBDAML_RETENTION") or "7d"
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"LAMBDAML_RETENTION: {exc}") from None
