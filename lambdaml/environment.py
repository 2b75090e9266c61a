"""The package stage, environment side: what a model needs besides its code.

* Which of the user's modules must travel by value (``__main__``, notebook
  cells, helper files that are not installed) and which third-party
  distributions the code imports, found by walking the model's bytecode.
* Environment variables and secrets for the replicas.
"""

from __future__ import annotations

import dis
import importlib.metadata
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

from packaging.utils import canonicalize_name

from lambdaml.serve.log_capture import MIN_MASKED
from lambdaml.errors import DeployError
from lambdaml.spec import ModelSpec

_INSTALLED_ROOTS = tuple(
    str(Path(p).resolve())
    for p in {
        *(sys.prefix, sys.base_prefix, sys.exec_prefix),
        *(os.path.dirname(os.__file__),),
    }
)


def is_installed(module: ModuleType) -> bool:
    """True for the standard library and site-packages: the cluster imports those itself."""
    path = getattr(module, "__file__", None)
    if path is None:  # builtins, namespace packages
        return True
    return str(Path(path).resolve()).startswith(_INSTALLED_ROOTS)


def _is_shippable(module: ModuleType) -> bool:
    """User code the cluster cannot import: it must be pickled by value."""
    name = module.__name__
    return name != "__main__" and name.split(".")[0] != "lambdaml" and not is_installed(module)


# ------------------------------------------------------------------ code walk


def _code_objects(obj: Any) -> list[CodeType]:
    if isinstance(obj, FunctionType):
        return [obj.__code__]
    if isinstance(obj, type):
        members = [getattr(m, "__func__", m) for m in vars(obj).values()]
        members += [m.fget for m in vars(obj).values() if isinstance(m, property) and m.fget]
        return [code for member in members if isinstance(member, FunctionType) for code in _code_objects(member)]
    return []


def _referenced(code: CodeType, namespace: dict[str, Any]) -> tuple[set[str], list[Any]]:
    """Module names a code object imports or reads, and the global objects it uses."""
    modules: set[str] = set()
    objects: list[Any] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME" and instruction.argval:
            modules.add(instruction.argval)
        elif instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and instruction.argval in namespace:
            value = namespace[instruction.argval]
            if isinstance(value, ModuleType):
                modules.add(value.__name__)
            else:
                objects.append(value)
                owner = getattr(value, "__module__", None)
                if isinstance(owner, str):
                    modules.add(owner)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            inner_modules, inner_objects = _referenced(const, namespace)
            modules |= inner_modules
            objects += inner_objects
    return modules, objects


def _closure_values(obj: Any) -> list[Any]:
    values = []
    for cell in getattr(obj, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    return values


@dataclass
class CodeScan:
    """What the model's code reaches: local modules to ship, top-level packages to pin."""

    local_modules: list[ModuleType] = field(default_factory=list)
    packages: set[str] = field(default_factory=set)


def _module(name: str) -> ModuleType | None:
    """The module, importing a not-yet-imported *local* one (``import helper`` inside predict)."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    if str(Path(spec.origin).resolve()).startswith(_INSTALLED_ROOTS):
        return None  # installed: only its name matters, no need to import it here
    return importlib.import_module(name)


def scan_code(target: Any) -> CodeScan:
    """Walk the bytecode reachable from ``target``: local helpers are followed, packages recorded."""
    scan = CodeScan()
    seen_objects: set[int] = set()
    seen_modules: set[str] = set()
    pending: list[Any] = [target, getattr(target, "__module__", None) or "__main__"]  # its own module too
    while pending:
        obj = pending.pop()
        if isinstance(obj, str):  # a module name
            if obj not in seen_modules:
                seen_modules.add(obj)
                pending += _classify(obj, scan)
            continue
        if id(obj) in seen_objects:
            continue
        seen_objects.add(id(obj))
        owner = sys.modules.get(getattr(obj, "__module__", "") or "")
        namespace = getattr(obj, "__globals__", None) or (vars(owner) if owner else {})
        for code in _code_objects(obj):
            modules, objects = _referenced(code, namespace)
            objects += _closure_values(obj)
            modules |= {o.__name__ for o in objects if isinstance(o, ModuleType)}
            pending += [o for o in objects if isinstance(o, (FunctionType, type))] + sorted(modules)
    return scan


def _classify(name: str, scan: CodeScan) -> list[Any]:
    """Record one referenced module; a local one is shipped and its contents are walked in turn."""
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("lambdaml", "__main__", "builtins"):
        return []
    module = _module(name)
    if module is None or not _is_shippable(module):
        scan.packages.add(top)
        return []
    if module in scan.local_modules:
        return []
    scan.local_modules.append(module)
    contents = list(vars(module).values())
    defined_here = [v for v in contents if getattr(v, "__module__", None) == module.__name__]
    imported = [v.__name__ for v in contents if isinstance(v, ModuleType)]  # its module-level imports
    return defined_here + imported


# ------------------------------------------------------------------ requirements


def _pin(top_level: str, distributions: dict[str, list[str]]) -> list[str]:
    pins = []
    for dist in distributions.get(top_level, []):
        try:
            pins.append(f"{canonicalize_name(dist)}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def requirements_for(spec: ModelSpec, scan: CodeScan) -> list[str]:
    """The model's requirements: declared ones, else the detected imports pinned to local versions."""
    declared = list(spec.packages)
    if spec.requirements:
        lines = Path(spec.requirements).read_text().splitlines()
        declared += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    if declared:
        return declared
    distributions = importlib.metadata.packages_distributions()
    pins = {pin for top in scan.packages for pin in _pin(top, distributions)}
    return sorted(pins - {f"lambdaml=={_own_version()}"})


def _own_version() -> str:
    try:
        return importlib.metadata.version("lambdaml")
    except importlib.metadata.PackageNotFoundError:
        return ""


# ------------------------------------------------------------------ variables and secrets

# Storage credentials and endpoints (the standard AWS and GCP chains read these), fsspec's
# own settings, and the file settings of lambdaml.files: what replicas need to move files.
_FORWARDED = re.compile(
    r"^(AWS_\w+|GOOGLE_\w+|GCLOUD_\w+|CLOUDSDK_\w+|GCSFS_\w+|FSSPEC_\w+|STORAGE_EMULATOR_HOST"
    r"|LAMBDAML_(OUTPUT_URL|ALLOWED_HOSTS|INPUT_BUCKETS|MAX_INPUT_BYTES|INLINE_MAX_BYTES|PRESIGN_SECONDS|MAX_REQUEST_BYTES))$"
)
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|FSSPEC_", re.IGNORECASE)


def forwarded_environment() -> dict[str, str]:
    """Storage credentials and file settings of this process, for the replicas.

    ``LAMBDAML_FORWARD_CREDENTIALS=0`` keeps the storage credentials at home (a
    cluster with its own IAM role); lambdaml's file settings still travel.
    """
    keep_credentials = os.environ.get("LAMBDAML_FORWARD_CREDENTIALS", "1").lower() not in ("0", "false", "no")
    return {
        name: value
        for name, value in os.environ.items()
        if _FORWARDED.match(name) and (keep_credentials or name.startswith("LAMBDAML_"))
    }


def sensitive_values(environment: dict[str, str]) -> list[str]:
    """The values of ``environment`` whose names say they are secret, for masking in logs."""
    return [value for name, value in environment.items() if value and _SECRET_NAME.search(name)]


def secret_values(names: tuple[str, ...], dotenv_path: str = ".env") -> dict[str, str]:
    """Secret values from this process's environment, else from a ``.env`` file."""
    from dotenv import dotenv_values

    from_file = dotenv_values(dotenv_path) if names and Path(dotenv_path).is_file() else {}
    values, absent = {}, []
    for name in names:
        value = os.environ.get(name, from_file.get(name))
        if value is None:
            absent.append(name)
        else:
            values[name] = value
    if absent:
        raise DeployError(
            f"Secret {', '.join(absent)} is not set. Set it in this shell (export {absent[0]}=...) "
            f"or in a .env file in {Path.cwd()}."
        )
    short = [name for name, value in values.items() if value and len(value) < MIN_MASKED]
    if short:
        warnings.warn(
            f"Secret {', '.join(short)} is shorter than {MIN_MASKED} characters, so it is not masked in logs "
            "(masking it would garble every line that happens to contain those characters).",
            stacklevel=2,
        )
    return values
