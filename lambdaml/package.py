"""The package stage: a ``Model`` becomes an artifact a replica can load.

Code the cluster cannot import (``__main__``, notebook cells, helper modules
that are not installed) is pickled by value with cloudpickle; installed
packages travel by reference and are listed, pinned, in the manifest.
``lambdaml._code_scan`` finds both; ``lambdaml.artifacts`` stores the result.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import cloudpickle

from lambdaml.artifacts import Manifest
from lambdaml._installs import CLIENT_PYTHON
from lambdaml._code_scan import requirements_for, scan_code
from lambdaml.errors import ConfigError
from lambdaml.model import Model

LARGE_ARTIFACT_BYTES = 10 * 1024 * 1024


class LargeArtifactWarning(UserWarning):
    """The pickled model is big: it probably captured data that belongs in files or weight URLs."""


def pack(model: Model, by_value: list[ModuleType] = ()) -> bytes:
    """Serialise the model, with ``by_value`` modules inside the bytes instead of imported by name."""
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(model)
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


def unpack(payload: bytes) -> Model:
    """The inverse of ``pack``, run in the replica."""
    model = cloudpickle.loads(payload)
    if not isinstance(model, Model):
        raise TypeError(f"expected a packaged lambdaml Model, got {type(model).__name__}")
    return model


def build(model: Model, secrets: dict[str, str]) -> tuple[Manifest, bytes]:
    """The artifact of ``model``: its manifest and code. ``secrets`` are only checked for, never stored."""
    scan = scan_code(model.target)
    # Without its hardware and scaling: the manifest keeps those, and each deploy may change them.
    code = pack(model.with_spec(model.spec.without_settings()), scan.local_modules)
    leaked = [name for name, value in secrets.items() if len(value) >= 4 and value.encode() in code]
    if leaked:
        raise ConfigError(
            f"The code of {model.name!r} holds the value of secret {', '.join(leaked)} (read at import time?). "
            f"Read it inside setup() or predict() with os.environ[{leaked[0]!r}] so it is not stored with the code."
        )
    if len(code) > LARGE_ARTIFACT_BYTES:
        warnings.warn(
            f"{model.name!r} pickles to {len(code) / 2**20:.0f} MB: its code captures large objects. "
            "Load big data in setup() from a file or a weights URL (s3://, gs://, https://) instead.",
            LargeArtifactWarning,
            stacklevel=3,
        )
    manifest = Manifest(
        name=model.name,
        python=CLIENT_PYTHON,
        spec=model.spec.model_dump(mode="json"),
        requirements=requirements_for(model.spec, scan),
        openapi=model.openapi(),
        trains=model.trains,
    )
    return manifest, code
