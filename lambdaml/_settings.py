"""Settings read from the environment, in one place so every stage agrees.

Read at call time, not import time: tests and the CLI change the environment
after ``import lambdaml``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number (a port), got {raw!r}") from None


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
    """``LAMBDAML_DEBUG=1`` adds tracebacks to failed predictions."""
    return os.environ.get("LAMBDAML_DEBUG", "").lower() in ("1", "true", "yes")


def artifact_store_url() -> str:
    """Where artifacts live: ``LAMBDAML_ARTIFACTS`` (any fsspec URL), else ``~/.lambdaml/artifacts``."""
    return os.environ.get("LAMBDAML_ARTIFACTS") or str(Path.home() / ".lambdaml" / "artifacts")
