"""The package stage: turn a ``Model`` into bytes a replica can load, and a version id.

Code the cluster cannot import (``__main__``, notebook cells, a script's
helper modules that are not installed) is pickled by value with cloudpickle;
installed packages travel by reference. The version id is the content hash of
those bytes, so identical code always gets the same id.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import cloudpickle

from lambdaml.model import Model

_INSTALLED_ROOTS = tuple(
    str(Path(p).resolve())
    for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sysconfig.get_paths()["stdlib"]}
)


def _is_installed(module: ModuleType) -> bool:
    """True for the standard library and site-packages: the cluster imports those itself."""
    path = getattr(module, "__file__", None)
    if path is None:  # builtins, namespace packages
        return True
    return str(Path(path).resolve()).startswith(_INSTALLED_ROOTS)


def _user_module(target: object) -> ModuleType | None:
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or module.__name__.startswith("lambdaml."):
        return None
    return None if _is_installed(module) else module


def pack(model: Model) -> bytes:
    """Serialise the model; its own module goes by value unless it is installed."""
    module = _user_module(model.target)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(model)
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)


def unpack(payload: bytes) -> Model:
    """The inverse of ``pack``, run in the replica."""
    model = cloudpickle.loads(payload)
    if not isinstance(model, Model):
        raise TypeError(f"expected a packaged lambdaml Model, got {type(model).__name__}")
    return model


def version_id(payload: bytes) -> str:
    """Content hash of the package: same code and spec, same version."""
    return hashlib.sha256(payload).hexdigest()[:12]

