"""Parsing of the resource strings users write in ``@model``: GPUs and memory."""

from __future__ import annotations

import re
from dataclasses import dataclass

# lambdaml's GPU names -> Ray's accelerator_type names (ray.util.accelerators).
GPU_TYPES: dict[str, str] = {
    "T4": "T4",
    "L4": "L4",
    "A10G": "A10G",
    "A100": "A100",
    "A100-40GB": "A100-40G",
    "A100-80GB": "A100-80G",
    "H100": "H100",
    "H200": "H200",
    "B200": "B200",
}

GPU_HELP = (
    f"one of {', '.join(GPU_TYPES)}, optionally with ':N' for a count (e.g. 'H100:2'), "
    "or a list of these as fallbacks in order of preference"
)


@dataclass(frozen=True)
class GpuRequest:
    """``count`` GPUs of one type, e.g. ``GpuRequest("H100", 2)`` for "H100:2"."""

    type: str
    count: int = 1

    @property
    def accelerator_type(self) -> str:
        """The name Ray uses for this GPU type (its ``accelerator_type:X`` resource)."""
        return GPU_TYPES[self.type]

    def __str__(self) -> str:
        return self.type if self.count == 1 else f"{self.type}:{self.count}"


def parse_gpu(value: str) -> GpuRequest:
    """Parse "A100" or "H100:2"; raise ValueError naming the accepted values."""
    if not isinstance(value, str):
        raise ValueError(f"expected a GPU name string, got {value!r}; accepted: {GPU_HELP}")
    name, colon, count_text = value.strip().partition(":")
    canonical = {k.upper(): k for k in GPU_TYPES}.get(name.upper())
    if canonical is None:
        raise ValueError(f"unknown GPU {value!r}; accepted: {GPU_HELP}")
    if not colon:
        return GpuRequest(canonical)
    if not count_text.isdigit() or int(count_text) < 1:
        raise ValueError(f"GPU count in {value!r} must be a whole number of at least 1, e.g. 'H100:2'")
    return GpuRequest(canonical, int(count_text))


_MEMORY_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)
MEMORY_HELP = "a size such as '512Mi', '8Gi', '16G' or a number of bytes"


def parse_memory(value: str | int) -> int:
    """Bytes in "8Gi" (binary), "8G" (decimal) or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected {MEMORY_HELP}, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY.match(str(value))
        if not match:
            raise ValueError(f"cannot read {value!r} as memory; expected {MEMORY_HELP}")
        size = int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "").lower()])
    if size <= 0:
        raise ValueError(f"memory must be more than zero, got {value!r}")
    return size
