"""The CLI's options for a deployment's hardware and scaling (``spec.SETTINGS``), and how it shows them.

``lambdaml deploy``, ``lambdaml scale`` and ``lambdaml hardware`` share these options, so each
means the same and reads the same in ``--help`` everywhere; what they do is
``lambdaml.deploy`` (``deploy(settings=...)``, ``reconfigure``).
"""

from __future__ import annotations

from typing import Any, Optional

import typer

GPU: Optional[str] = typer.Option(
    None, "--gpu", help="GPU type per replica, e.g. H100, A100:2, or fallbacks in order: H100,A100. `none` for no GPU."
)
CPU: Optional[float] = typer.Option(None, "--cpu", help="CPUs per replica (fractions allowed).")
MEMORY: Optional[str] = typer.Option(None, "--memory", help="Memory per replica, e.g. 16Gi.")
MIN: Optional[int] = typer.Option(None, "--min", help="Fewest replicas; 0 scales to zero when idle.")
MAX: Optional[int] = typer.Option(None, "--max", help="Most replicas.")
CONCURRENCY: Optional[int] = typer.Option(None, "--concurrency", help="Target predictions in flight per replica.")
SCALEDOWN_AFTER: Optional[float] = typer.Option(None, "--scaledown-after", help="Idle seconds before a replica is removed.")
TIMEOUT: Optional[float] = typer.Option(None, "--timeout", help="Seconds one prediction may run.")


def chosen(**options: Any) -> dict[str, Any]:
    """The settings given on the command line (those left out keep their value)."""
    settings = {name: value for name, value in options.items() if value is not None}
    if "gpu" in settings:
        gpu = settings["gpu"].strip()
        settings["gpu"] = None if gpu.lower() == "none" else [part.strip() for part in gpu.split(",") if part.strip()]
    return settings


def describe(settings: dict[str, Any]) -> str:
    """Settings in a few words: ``A100 x1, 0-50 replicas, 4 at once, timeout 600 s``."""
    gpus = " or ".join(f"{gpu['type']} x{gpu['count']}" for gpu in settings.get("gpu") or [])
    parts = [gpus or "no GPU"]
    if settings.get("cpu"):
        parts.append(f"{settings['cpu']:g} CPU")
    if settings.get("memory"):
        parts.append(f"{settings['memory'] / 2**30:g} GiB")
    parts.append(f"{settings.get('min', 0)}-{settings.get('max', 1)} replicas")
    parts.append(f"{settings.get('concurrency', 1)} at once")
    if settings.get("timeout"):
        parts.append(f"timeout {settings['timeout']:g} s")
    return ", ".join(parts)


def dollars(amount: float | None) -> str:
    """``$1,234.56``, or ``-`` for an amount no price is known for."""
    return "-" if amount is None else f"${amount:,.2f}"


def clock(hours: float) -> str:
    """Hours as ``h:mm:ss`` (``26:03:41``): replica time, to the second."""
    seconds = round(hours * 3600)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
