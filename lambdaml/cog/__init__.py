"""Unmodified Cog models on lambdaml: ``lambdaml deploy ./my-cog-model``.

``load`` reads the project's ``cog.yaml`` (``project``), asks Cog's own inspector what the
predictor takes and returns (``interface``), and gives back a ``CogModel``: a lambdaml
``Model`` whose code is the project's files and whose class (``runner``) runs the predictor
inside a replica. From there on it is deployed, versioned, scaled and called like any model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
import os
import pathlib
import sys
import tempfile
import zipfile
from typing import Any

from lambdaml.cog import interface as _interface
from lambdaml.cog.project import CogProject, Ref, find_root, read
from lambdaml.cog.runner import runner_class
from lambdaml.errors import ConfigError, code_error
from lambdaml.model import Model, as_trainer
from lambdaml.schema import ModelSchema, describe
from lambdaml.spec import ModelSpec, build_spec

__all__ = ["CogModel", "find_root", "load"]


class CogModel(Model):
    """A Cog project as a lambdaml model. It pickles as its files and interface, never as the predictor's code."""

    def __init__(self, archive: bytes, ref: Ref, interface: _interface.CogInterface, spec: ModelSpec,
                 upload_url: str | None = None, train: tuple[Ref, _interface.CogInterface] | None = None):
        self._cog = (archive, ref, interface, upload_url)
        self._train = train  # cog.yaml's train: its reference and interface (``trainer``)
        self.notes: list[str] = []  # what deploy says about the project (the Python version it asked for)
        super().__init__(runner_class(spec.name, archive, ref, interface, upload_url), spec)

    @functools.cached_property
    def schema(self) -> ModelSchema:
        """As any model's, but answering as Cog does: Cog's output schema, a stream's items kept as a list."""
        return dataclasses.replace(describe(self.target), cog_output=self._cog[2].output_schema)

    def __reduce__(self) -> tuple[Any, ...]:
        archive, ref, interface, upload_url = self._cog
        return (CogModel, (archive, ref, interface, self.spec, upload_url))

    def with_spec(self, spec: ModelSpec) -> "CogModel":
        archive, ref, interface, upload_url = self._cog
        return CogModel(archive, ref, interface, spec, upload_url, self._train)

    def trainer(self) -> "CogModel | None":
        """cog.yaml's ``train`` function as the model ``{name}-train`` (``Model.trainer``)."""
        if self._train is None:
            return None
        archive, _, _, _ = self._cog
        return as_trainer(CogModel(archive, *self._train, self.spec), self.name)


@contextlib.contextmanager
def _inside(root: pathlib.Path):
    """The project as the working directory and first import path while its code is read (Cog's layout).

    Its modules shadow any of the same name this process has loaded (another project's
    ``predict``, say), as they would in Cog's image; afterwards the process gets its own back.
    """
    own = {path.stem for path in root.iterdir() if path.suffix == ".py" or (path / "__init__.py").exists()}
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in own}
    sys.path.insert(0, str(root))
    try:
        with contextlib.chdir(root):
            yield
    finally:
        sys.path.remove(str(root))
        for module_name, module in list(sys.modules.items()):  # the project's modules leave with it
            if module_name.split(".")[0] in own or \
                    pathlib.Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(root):
                del sys.modules[module_name]
        sys.modules.update(shadowed)


class _NotInstalledHere(Exception):
    """The predictor imports a package this machine lacks: it is read on the cluster instead."""


def _describe(root: pathlib.Path, ref: Ref, key: str, here: bool = True) -> _interface.CogInterface:
    """What the predictor at ``root/ref`` takes and returns, by Cog's inspector (ConfigError if it cannot be read)."""
    path = root / ref.file
    with _inside(root):
        try:
            module = importlib.import_module(ref.module)
        except ModuleNotFoundError as exc:
            if here and exc.name and not (root / exc.name.split(".")[0]).exists() and \
                    not (root / f"{exc.name.split('.')[0]}.py").exists():
                raise _NotInstalledHere(exc.name) from None
            raise code_error(exc, path) from exc
        except Exception as exc:  # SyntaxError and ImportError included: the project's code is at fault
            raise code_error(exc, path) from exc
        if not hasattr(module, ref.name):
            raise ConfigError(f"cog.yaml's {key}: {ref.file} has no class or function {ref.name!r}")
        try:
            return _interface.read(ref.module, ref.name)
        except (ValueError, TypeError, ImportError) as exc:  # Cog's own refusal of the predictor
            raise ConfigError(f"{ref}: {exc}") from None


def describe_archive(archive: bytes, ref: Ref, key: str) -> _interface.CogInterface | str:
    """``_describe`` on a packed project, run in a cluster worker that has its packages; an error as its message."""
    with tempfile.TemporaryDirectory(prefix="lambdaml-cog-") as directory:
        with zipfile.ZipFile(io.BytesIO(archive)) as files:
            files.extractall(directory)
        try:
            return _describe(pathlib.Path(directory).resolve(), ref, key, here=False)
        except ConfigError as exc:
            return str(exc).replace(directory, "<project>")


def _describe_on_cluster(project: CogProject, archive: bytes, ref: Ref, key: str) -> _interface.CogInterface:
    import ray

    from lambdaml import _installs, cluster

    info = cluster.connect()
    install = _installs.missing(list(project.packages), _installs.cluster_environment(info.address)[1])
    _installs.check_installable(info.address, project.default_name, install)
    reader = ray.remote(num_cpus=0, runtime_env=_installs.runtime_env(install))(describe_archive)
    answer = ray.get(reader.remote(archive, ref, key), timeout=_installs.PIP_TIMEOUT_S + 300)
    if isinstance(answer, str):
        raise ConfigError(answer)
    return answer


def _inspect(project: CogProject, archive: bytes, ref: Ref, key: str) -> _interface.CogInterface:
    """Read the predictor here if this machine can import it, else on the cluster, with cog.yaml's packages."""
    try:
        return _describe(project.root, ref, key)
    except _NotInstalledHere as missing:
        if not project.packages:
            raise ConfigError(f"{project.root / ref.file} imports {missing}, which neither this machine nor "
                              "cog.yaml's build.python_packages provides; add it there") from None
        return _describe_on_cluster(project, archive, ref, key)


def load(target: str | os.PathLike, name: str | None = None, upload_url: str | None = None,
         ignore_system_packages: bool = False, strict_python: bool = False) -> CogModel:
    """The model of the Cog project at ``target`` (its directory or its cog.yaml).

    ``name``: the model's name (default: the directory's, in kebab-case). ``upload_url``: where
    file outputs are PUT, as ``cog serve --upload-url``. Raises ConfigError, of a line or two,
    for everything cog.yaml asks that lambdaml cannot do or that the project's code lacks.
    """
    root = find_root(target)
    if root is None:
        raise ConfigError(f"No Cog project at {target}: give a directory with a cog.yaml, or the cog.yaml itself")
    project = read(root, ignore_system_packages=ignore_system_packages, strict_python=strict_python)
    if upload_url is not None and not upload_url.startswith(("http://", "https://")):
        raise ConfigError(f"--upload-url {upload_url!r} must be an http:// or https:// URL (file outputs are PUT to it)")
    spec = build_spec(_title=f"Invalid settings for the Cog model in {root}",
                      **{"name": name or project.default_name, **project.model_params()})
    archive = project.archive()
    interface = _inspect(project, archive, project.predict, "predict")
    train = None if project.train is None else (project.train, _inspect(project, archive, project.train, "train"))
    model = CogModel(archive, project.predict, interface, spec, upload_url, train)
    model.notes += [note for note in [project.python_note()] if note]
    return model
