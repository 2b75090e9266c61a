"""A Cog project on disk: its ``cog.yaml`` read and checked, its files packed for the cluster.

Cog builds an image from ``cog.yaml``; lambdaml has no image, so this module decides what of
``cog.yaml`` it can honour (the predictor, the Python packages, the environment, the
concurrency, the GPU) and refuses, by name, what only an image could give (system packages,
``build.run`` commands, a CUDA version) unless the user says the cluster has them already.
"""

from __future__ import annotations

import fnmatch
import io
import os
import pathlib
import re
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from lambdaml._resources import GPU_TYPES
from lambdaml.errors import ConfigError

# The project travels inside the artifact, like a script's helper modules; weights must not.
MAX_PROJECT_BYTES = 10 * 1024 * 1024
_ALWAYS_SKIPPED = {".git", ".cog", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints"}
_REF = re.compile(r"^(?P<file>[^:]+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_IMAGE_ONLY = ("system_packages", "run", "cuda")


@dataclass(frozen=True)
class Ref:
    """``predict.py:Predictor``: a file of the project and a class or function in it."""

    file: str  # relative to the project root, with forward slashes
    name: str

    @property
    def module(self) -> str:
        """The module name Cog imports the file as: its path without ``.py``, dots for slashes."""
        return self.file.removesuffix(".py").replace("/", ".")

    def __str__(self) -> str:
        return f"{self.file}:{self.name}"


@dataclass(frozen=True)
class CogProject:
    """What lambdaml takes from a directory with a ``cog.yaml``."""

    root: pathlib.Path
    predict: Ref
    train: Ref | None = None
    packages: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    concurrency: int | None = None
    gpu: bool = False
    python_version: str | None = None
    image_only: dict[str, Any] = field(default_factory=dict)  # build.system_packages / run / cuda, as written

    @property
    def default_name(self) -> str:
        """The model's name when ``--name`` is not given: the directory's name in kebab-case."""
        from lambdaml.spec import kebab_case

        return kebab_case(self.root.name)

    def model_params(self) -> dict[str, Any]:
        """What ``@model(...)`` would say for this project: its defaults come from cog.yaml."""
        params: dict[str, Any] = {"packages": list(self.packages), "env": dict(self.environment)}
        if self.concurrency:
            params["concurrency"] = self.concurrency
        if self.gpu:  # `build.gpu: true` asks for a GPU, not a type: any of lambdaml's, in its order
            params["gpu"] = list(GPU_TYPES)
        return params

    def python_note(self) -> str | None:
        """The one line deploy prints when cog.yaml names another Python than the cluster's."""
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if self.python_version is None or self.python_version == here:
            return None
        return (f"cog.yaml asks for Python {self.python_version}; the model runs on the cluster's Python {here} "
                "(--strict-python refuses instead)")

    def files(self) -> list[pathlib.Path]:
        """The project's files that are shipped: all but VCS, caches and what .dockerignore (or .cogignore) lists."""
        patterns = _ignore_patterns(self.root)
        found = []
        for directory, subdirectories, names in os.walk(self.root):
            relative_dir = pathlib.Path(directory).relative_to(self.root)
            subdirectories[:] = sorted(
                d for d in subdirectories
                if d not in _ALWAYS_SKIPPED and not _ignored((relative_dir / d).as_posix(), patterns)
            )
            found += [pathlib.Path(directory) / name for name in sorted(names)
                      if not _ignored((relative_dir / name).as_posix(), patterns)]
        return found

    def archive(self) -> bytes:
        """The shipped files as a zip, the same bytes for the same files (so the version is stable)."""
        files = self.files()
        total = sum(path.stat().st_size for path in files)
        if total > MAX_PROJECT_BYTES:
            biggest = max(files, key=lambda path: path.stat().st_size)
            raise ConfigError(
                f"{self.root} holds {total / 2**20:.1f} MiB of files (the most a model's code may be is "
                f"{MAX_PROJECT_BYTES // 2**20} MiB; the biggest is {biggest.relative_to(self.root)}). Keep weights out of "
                "the directory (list them in .dockerignore) and load them in setup() with lambdaml.files.cached(url) "
                "or setup(self, weights)."
            )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(self.root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
        return buffer.getvalue()


def _ignore_patterns(root: pathlib.Path) -> list[str]:
    patterns = []
    for name in (".dockerignore", ".cogignore"):
        path = root / name
        if path.is_file():
            patterns += [line.strip().strip("/") for line in path.read_text().splitlines()
                         if line.strip() and not line.startswith("#")]
    return patterns


def _ignored(relative: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative, f"{pattern}/*") for pattern in patterns)


def find_root(target: str | os.PathLike) -> pathlib.Path | None:
    """The project directory ``target`` names (the directory, or its cog.yaml), or None if it names neither."""
    path = pathlib.Path(target)
    if path.name in ("cog.yaml", "cog.yml") and path.is_file():
        return path.parent.resolve()
    if path.is_dir():
        return path.resolve()
    return None


def read(root: pathlib.Path, ignore_system_packages: bool = False, strict_python: bool = False) -> CogProject:
    """Read and check ``root/cog.yaml``: every problem is a ConfigError of a line or two, naming the key."""
    config_path = next((root / name for name in ("cog.yaml", "cog.yml") if (root / name).is_file()), None)
    if config_path is None:
        raise ConfigError(f"No cog.yaml in {root}. A Cog project has one, with at least `predict: \"predict.py:Predictor\"`.")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_path} must be a mapping of keys (build, predict, ...), not {type(config).__name__}")
    build = config.get("build") or {}
    if not isinstance(build, dict):
        raise ConfigError(f"{config_path}: build must be a mapping (python_version, python_packages, ...)")
    predict = config.get("predict") or config.get("run")
    if not predict:
        raise ConfigError(f"{config_path} has no `predict:` (or `run:`); add e.g. `predict: \"predict.py:Predictor\"`")
    project = CogProject(
        root=root,
        predict=_ref(root, predict, "predict"),
        train=_ref(root, config["train"], "train") if config.get("train") else None,
        packages=_packages(root, build, config_path),
        environment=_environment(config.get("environment") or [], config_path),
        concurrency=_concurrency(config.get("concurrency"), config_path),
        gpu=bool(build.get("gpu", False)),
        python_version=str(build["python_version"]) if build.get("python_version") else None,
        image_only={key: build[key] for key in _IMAGE_ONLY if build.get(key)},
    )
    if project.image_only and not ignore_system_packages:
        raise ConfigError(
            f"{config_path} asks for what only a container image can give: {_describe_image_only(project.image_only)}. "
            "lambdaml runs the model without an image; if the cluster's own image has these, "
            "deploy again with --ignore-system-packages."
        )
    if strict_python and project.python_note():
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise ConfigError(f"cog.yaml asks for Python {project.python_version} and the cluster runs {here} "
                          "(--strict-python); remove --strict-python to run it on the cluster's Python")
    return project


def _describe_image_only(image_only: dict[str, Any]) -> str:
    parts = []
    if "system_packages" in image_only:
        parts.append("system packages " + ", ".join(map(str, image_only["system_packages"])))
    if "run" in image_only:
        parts.append(f"{len(image_only['run'])} build.run command(s)")
    if "cuda" in image_only:
        parts.append(f"CUDA {image_only['cuda']}")
    return "; ".join(parts)


def _ref(root: pathlib.Path, value: Any, key: str) -> Ref:
    match = _REF.match(str(value).strip())
    if not match:
        raise ConfigError(f"cog.yaml's {key}: {value!r} should name a file and a class or function in it, "
                          "e.g. \"predict.py:Predictor\"")
    file = pathlib.PurePosixPath(match["file"].removeprefix("./"))
    path = (root / file).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ConfigError(f"cog.yaml's {key}: no file {file} in {root}")
    return Ref(file.as_posix(), match["name"])


def _packages(root: pathlib.Path, build: dict[str, Any], config_path: pathlib.Path) -> tuple[str, ...]:
    """``python_packages`` then ``python_requirements``'s lines; local archives become absolute paths."""
    lines = [str(line) for line in build.get("python_packages") or []]
    requirements = build.get("python_requirements")
    if requirements:
        path = root / requirements
        if not path.is_file():
            raise ConfigError(f"{config_path}: build.python_requirements names {requirements}, which is not in {root}")
        lines += path.read_text().splitlines()
    packages = []
    for line in lines:
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):  # pip options (--extra-index-url ...) need an index lambdaml does not pass on
            raise ConfigError(f"{config_path}: the requirement line {line!r} is a pip option, which lambdaml cannot pass on; "
                              "list packages only")
        if line.endswith((".whl", ".zip", ".tar.gz")) and (root / line).is_file():
            line = str((root / line).resolve())  # a local archive: pip reads it from this path
        packages.append(line)
    return tuple(packages)


def _environment(value: Any, config_path: pathlib.Path) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    environment = {}
    for item in value:
        name, equals, setting = str(item).partition("=")
        if not equals:
            raise ConfigError(f"{config_path}: environment entry {item!r} should be NAME=value")
        environment[name.strip()] = setting
    return environment


def _concurrency(value: Any, config_path: pathlib.Path) -> int | None:
    if value is None:
        return None
    limit = value.get("max") if isinstance(value, dict) else None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(f"{config_path}: concurrency.max must be a whole number of at least 1, got {limit!r}")
    return limit
