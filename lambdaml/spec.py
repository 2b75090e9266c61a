"""The declare stage: what ``@model(...)`` asked for, validated at decoration time.

A ``ModelSpec`` only records intent. Translating it into Ray Serve options is
the deploy stage's job (``lambdaml.deploy``), so the spec stays readable and
serialisable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lambdaml._pickling import StableModel
from lambdaml._settings import RESERVED_NAMES
from lambdaml._resources import GPU_HELP, MEMORY_HELP, GpuRequest, parse_gpu, parse_memory
from lambdaml.errors import ConfigError

# What a deploy may set without a new version: the hardware and scaling of a deployment, which
# Replicate keeps apart from the model's version. `lambdaml deploy --gpu ...` overrides them for
# one deploy and `lambdaml scale` / `lambdaml hardware` change them on a running model; the
# version id hashes everything else (lambdaml.artifacts.content_version).
SETTINGS = ("gpu", "cpu", "memory", "min", "max", "concurrency", "max_concurrency", "queue", "scaledown_after", "timeout")

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def kebab_case(name: str) -> str:
    """``EchoClass`` / ``echo_class`` -> ``echo-class``: the default model name."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name)
    return re.sub(r"[^a-z0-9]+", "-", spaced.lower()).strip("-")


class BatchSpec(StableModel):
    """``@model(batch=8)`` or ``batch={"max_size": 8, "wait_ms": 20}``: Ray Serve's request batching."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_size: int = Field(ge=1, description="Most requests in one call of predict")
    wait_ms: float = Field(default=10.0, ge=0, description="Longest wait for a batch to fill, in milliseconds")


def _gpu_item(value: Any) -> GpuRequest:
    if isinstance(value, GpuRequest):
        return value
    if isinstance(value, dict):  # read back from a stored manifest
        return GpuRequest(**value)
    return parse_gpu(value)


class ModelSpec(StableModel):
    """Everything ``@model`` accepts. Defaults are chosen for a fast, thrifty dev loop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="URL-safe name: lowercase letters, digits and dashes")
    gpu: tuple[GpuRequest, ...] = Field(default=(), description="GPU types in order of preference")
    cpu: float | None = Field(default=None, gt=0, description="CPUs per replica (fractions allowed)")
    memory: int | None = Field(default=None, description="Memory per replica in bytes")
    min: int = Field(default=0, ge=0, description="Fewest replicas; 0 scales to zero when idle")
    max: int = Field(default=1, ge=1, description="Most replicas")
    concurrency: int = Field(default=1, ge=1, description="Target in-flight requests per replica")
    max_concurrency: int | None = Field(default=None, ge=1, description="Hard limit of in-flight requests per replica")
    queue: int = Field(
        default=64, ge=0, description="Predictions a replica holds waiting for a free slot; past it callers get 503"
    )
    scaledown_after: float = Field(default=60.0, ge=0, description="Idle seconds before removing a replica")
    timeout: float | None = Field(default=None, gt=0, description="Seconds one prediction may run")
    packages: tuple[str, ...] = Field(default=(), description="pip requirements, e.g. 'tabulate==0.9.0'")
    requirements: str | None = Field(default=None, description="Path of a requirements.txt file")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set in the replicas")
    secrets: tuple[str, ...] = Field(default=(), description="Names of environment variables delivered as secrets")
    output_url: str | None = Field(default=None, description="Where output files go: s3://bucket/prefix or gs://...")
    batch: BatchSpec | None = Field(default=None, description="Batch requests: max size and wait")
    visibility: Literal["private", "public"] = Field(
        default="private", description="public: callers without a token may run it (once the API needs tokens)"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} cannot be used in a URL; use lowercase letters, digits and dashes "
                "(1-63 characters, e.g. 'image-captioner')"
            )
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is taken by lambdaml's own routes ({', '.join(sorted(RESERVED_NAMES))}); choose another name")
        return value

    @field_validator("gpu", mode="before")
    @classmethod
    def _parse_gpu(cls, value: Any) -> tuple[GpuRequest, ...]:
        if value is None:
            return ()
        if isinstance(value, GpuRequest):
            return (value,)
        if isinstance(value, str):
            return (parse_gpu(value),)
        if isinstance(value, (list, tuple)) and value:
            return tuple(_gpu_item(v) for v in value)
        if isinstance(value, (list, tuple)):  # a stored spec without GPUs
            return ()
        raise ValueError(f"expected {GPU_HELP}; got {value!r}")

    @field_validator("requirements")
    @classmethod
    def _check_requirements(cls, value: str | None, info: ValidationInfo) -> str | None:
        stored = bool(info.context and info.context.get("stored"))  # read back on another machine
        if value is not None and not stored and not Path(value).is_file():
            raise ValueError(f"no file at {value!r} (relative to {Path.cwd()}); expected a requirements.txt path")
        return value

    @field_validator("env", "secrets")
    @classmethod
    def _check_variable_names(cls, value: Any) -> Any:
        bad = [name for name in value if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} cannot be environment variable names (letters, digits, _)")
        return value

    @field_validator("batch", mode="before")
    @classmethod
    def _parse_batch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a batch size (e.g. 8) or {'max_size': 8, 'wait_ms': 20}")
        if isinstance(value, int):
            return {"max_size": value}
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return {"max_size": value[0], "wait_ms": value[1]}
        return value

    @field_validator("output_url")
    @classmethod
    def _check_output_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(s3|gs)://[^/]+", value):
            raise ValueError(f"{value!r} is not a bucket URL; expected s3://bucket/prefix or gs://bucket/prefix")
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> int | None:
        return None if value is None else parse_memory(value)

    @model_validator(mode="after")
    def _check_ranges(self) -> "ModelSpec":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max}); min must be <= max")
        if self.max_concurrency is not None and self.max_concurrency < self.concurrency:
            raise ValueError(
                f"max_concurrency ({self.max_concurrency}) is below concurrency ({self.concurrency}); "
                "it must be at least the target"
            )
        return self

    @model_validator(mode="after")
    def _check_secrets_apart(self) -> "ModelSpec":
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} is both in env and in secrets; list a variable in one of them")
        return self

    def settings(self) -> dict[str, Any]:
        """The deployment settings (``SETTINGS``), as JSON: what a deploy record keeps."""
        return self.model_dump(mode="json", include=set(SETTINGS))

    def with_settings(self, changes: dict[str, Any]) -> "ModelSpec":
        """This spec with some deployment settings changed, checked as ``@model(...)`` checks them."""
        unknown = sorted(set(changes) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"Invalid deploy settings: {', '.join(unknown)} cannot be changed at deploy time; "
                              f"the settings are {', '.join(SETTINGS)}")
        if not changes:
            return self
        return build_spec(**{**self.model_dump(), **changes}, _title="Invalid deploy settings", _stored=True)

    def without_settings(self) -> "ModelSpec":
        """This spec with every deployment setting at its default: what the packaged code carries, so
        that the code's hash (the version) does not depend on them (``lambdaml.package``)."""
        return self.model_copy(update={name: ModelSpec.model_fields[name].get_default() for name in SETTINGS})

    @property
    def ongoing_limit(self) -> int:
        """Requests one replica accepts at once (Serve's ``max_ongoing_requests``)."""
        return self.max_concurrency or self.concurrency

    @property
    def running_limit(self) -> int:
        """Predictions one replica runs at once: ``ongoing_limit``, or a whole batch (it can only fill if that many get in)."""
        return max(self.ongoing_limit, self.batch.max_size if self.batch else 0)


_HINTS = {
    "gpu": GPU_HELP,
    "memory": MEMORY_HELP,
    "name": "lowercase letters, digits and dashes",
}


def build_spec(_title: str = "Invalid @model(...) parameters", _stored: bool = False, **params: Any) -> ModelSpec:
    """Validate ``@model`` parameters, turning pydantic's errors into one clear ConfigError.

    ``_stored``: the parameters of a spec that was valid where it was made (its requirements
    file need not exist here).
    """
    try:
        return ModelSpec.model_validate(params, context={"stored": _stored})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"] if not isinstance(p, int)) or "model"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                accepted = ", ".join(ModelSpec.model_fields)
                message = f"unknown parameter; accepted parameters are: {accepted}"
            elif field in _HINTS and _HINTS[field] not in message:
                message = f"{message} (expected {_HINTS[field]})"
            lines.append(f"  {field}: {message}")
        raise ConfigError(f"{_title}:\n" + "\n".join(lines)) from None
