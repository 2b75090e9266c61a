"""What the cluster must install for a model, and whether it can.

The cluster's Python and packages are read once per process by a Ray task
(``cluster_environment``); only the requirements it does not satisfy are
installed, through Ray's ``runtime_env`` (none at all: a replica starts as
fast as any other). Before anything rolls out, pip resolves those on the
cluster (``check_installable``): a version that does not exist fails the
deploy with pip's reason, not a replica that never starts.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import subprocess
import sys
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from lambdaml.errors import DeployError

CLIENT_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
PIP_TIMEOUT_S = 600  # a resolution that downloads large wheels' metadata


def installed_here() -> tuple[str, dict[str, str]]:
    """This interpreter's Python major.minor and installed distributions (name -> version)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    return CLIENT_PYTHON, installed


def missing(requirements: list[str], installed: dict[str, str]) -> list[str]:
    """The requirements ``installed`` does not satisfy; unparseable ones (URLs, paths) always count."""
    result = []
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            result.append(line)
            continue
        version = installed.get(canonicalize_name(requirement.name))
        if version is None or (requirement.specifier and not requirement.specifier.contains(version, prereleases=True)):
            result.append(line)
    return result


def runtime_env(install: list[str]) -> dict[str, Any] | None:
    """Ray's runtime_env for packages the cluster lacks; None when there is nothing to install."""
    if not install:
        return None
    return {"pip": {"packages": list(install), "pip_check": False}}


@functools.cache
def cluster_environment(address: str) -> tuple[str, dict[str, str]]:
    """``installed_here`` as seen by a worker of the cluster at ``address`` (cached per process)."""
    import ray

    probe = ray.remote(num_cpus=0)(installed_here)
    return ray.get(probe.remote(), timeout=120)


def check_python(cluster_python: str, client_python: str | None = None) -> None:
    """Code pickled by one Python minor version cannot be loaded by another: say so before deploying."""
    client_python = client_python or CLIENT_PYTHON
    if cluster_python != client_python:
        raise DeployError(
            f"This machine runs Python {client_python} but the cluster runs Python {cluster_python}. "
            f"lambdaml ships code as Python {client_python} bytecode, which the cluster cannot load. "
            f"Deploy from a Python {cluster_python} environment, or use a cluster with Python {client_python}."
        )


def pip_refusal(install: list[str]) -> str | None:
    """Why pip would not install ``install`` into this interpreter (its ERROR lines), or None.

    A dry run: pip resolves against this interpreter's packages, as Ray's ``runtime_env``
    installs on top of them, and nothing is changed."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-input",
               "--disable-pip-version-check", *install]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"pip did not finish resolving {', '.join(install)} within {PIP_TIMEOUT_S} s"
    return None if result.returncode == 0 else pip_errors(result.stderr)


def pip_errors(output: str) -> str:
    """pip's ERROR lines in ``output``, short: without the versions it ignored or lists them all."""
    errors = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("ERROR:") and "Ignored the following versions" not in line:
            errors.append(re.sub(r"\(from versions: [^)]{60,}\)", "(from versions: ...)", line))
    return "\n".join(dict.fromkeys(errors)) if errors else output.strip()[-2000:]


@functools.cache
def _cluster_refusal(address: str, install: tuple[str, ...]) -> str | None:
    import ray

    probe = ray.remote(num_cpus=0)(pip_refusal)
    return ray.get(probe.remote(list(install)), timeout=PIP_TIMEOUT_S + 60)


def check_installable(address: str, name: str, install: list[str]) -> None:
    """Refuse a deploy whose packages pip cannot install on the cluster at ``address`` (cached per process)."""
    if not install:
        return
    refusal = _cluster_refusal(address, tuple(install))
    if refusal is not None:
        raise DeployError(
            f"{name!r} needs {', '.join(install)}, which pip cannot install on the cluster "
            f"(Python {cluster_environment(address)[0]}):\n{refusal}\n"
            "Fix the version in @model(packages=...) or requirements=..., then deploy again."
        )
