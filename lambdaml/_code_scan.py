"""The package stage, code side: which of the user's modules travel by value, which packages are pinned.

Found by walking the model's bytecode: the user's own modules (``__main__``, notebook
cells, helper files that are not installed) are shipped by value by cloudpickle; the
third-party distributions the code imports are pinned to the versions installed here,
unless ``@model(packages=..., requirements=...)`` says otherwise.
"""

from __future__ import annotations

import dis
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

from packaging.utils import canonicalize_name

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
