"""The package stage, storage side: versioned artifacts in an fsspec store.

An artifact is two files under ``{store}/{name}/{version}/``: ``model.pkl``
(the cloudpickled model) and ``manifest.json`` (spec, pinned requirements,
variables, secret *names*, Python version). The version id is the hash of
both contents (creation time excluded), so identical code and settings give
the same id. Each deploy also writes a small record under
``{store}/{name}/deploys/``; together they answer "what ran when" and let
``rollback`` find the previous version. The store is a local directory by
default, or ``s3://`` / ``gs://`` for clusters on other machines.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import fsspec
from pydantic import BaseModel, Field

from lambdaml import _clock
from lambdaml._pickling import for_hashing
from lambdaml._settings import artifact_store_url
from lambdaml.errors import LambdamlError, NotDeployedError
from lambdaml.spec import ModelSpec

MANIFEST = "manifest.json"
CODE = "model.pkl"
DELETED = "deleted.json"  # in a model's folder while it is deleted


class Manifest(BaseModel):
    """Everything about an artifact except its code; safe to show (no secret values)."""

    name: str
    version: str = ""
    created_at: str = ""
    python: str
    spec: dict[str, Any]
    requirements: list[str] = Field(default_factory=list)
    code_bytes: int = 0
    code_sha256: str = ""  # of model.pkl as stored: checked before a replica unpickles it

    def model_spec(self) -> ModelSpec:
        return ModelSpec.model_validate(self.spec, context={"stored": True})


class VersionInfo(BaseModel):
    """One row of ``lambdaml.versions(name)``."""

    version: str
    created_at: str
    deployed_at: list[str] = Field(default_factory=list)
    current: bool = False
    requirements: list[str] = Field(default_factory=list)


def content_version(manifest: Manifest, code: bytes) -> str:
    """Hash of the code and the manifest's content (not its timestamp): the same in every process.

    80 bits: two different artifacts of one model sharing a version by chance is out of reach.
    """
    digest = hashlib.sha256(for_hashing(code))
    digest.update(manifest.model_dump_json(exclude={"version", "created_at", "code_sha256"}).encode())
    return digest.hexdigest()[:20]


class ArtifactStore:
    """Artifacts of every model, under one fsspec URL."""

    def __init__(self, url: str | None = None):
        self.url = (url or artifact_store_url()).rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def artifact_url(self, name: str, version: str) -> str:
        """The URL a replica (or a Serve config file) loads the artifact from."""
        return f"{self.url}/{name}/{version}"

    def save(self, manifest: Manifest, code: bytes) -> Manifest:
        """Store the artifact under its content version (kept as is if it is already there)."""
        manifest = manifest.model_copy(update={"code_bytes": len(code), "code_sha256": hashlib.sha256(code).hexdigest()})
        version = content_version(manifest, code)
        manifest_path = self._path(manifest.name, version, MANIFEST)
        if self.fs.exists(manifest_path):
            return load_manifest(self.artifact_url(manifest.name, version))
        manifest = manifest.model_copy(update={"version": version, "created_at": _clock.now()})
        self.fs.makedirs(self._path(manifest.name, version), exist_ok=True)
        self.fs.pipe_file(self._path(manifest.name, version, CODE), code)
        self.fs.pipe_file(manifest_path, manifest.model_dump_json(indent=2).encode())  # last: marks it complete
        return manifest

    def record_deploy(self, name: str, version: str) -> None:
        """Note that ``version`` of ``name`` was deployed now (unless it already was the current one)."""
        if self.fs.exists(deleted := self._path(name, DELETED)):
            self.fs.rm(deleted)
        if self.current_version(name) == version:
            return
        stamp = _clock.now()
        record = json.dumps({"version": version, "deployed_at": stamp}).encode()
        self.fs.makedirs(self._path(name, "deploys"), exist_ok=True)
        self.fs.pipe_file(self._path(name, "deploys", f"{stamp.replace(':', '-')}-{version}.json"), record)

    def record_delete(self, name: str) -> None:
        """Note that ``name`` was deleted: ``lambdaml up`` does not bring it back (a deploy undoes this)."""
        if self.fs.exists(self._path(name)):
            self.fs.pipe_file(self._path(name, DELETED), json.dumps({"deleted_at": _clock.now()}).encode())

    def live_models(self) -> list[str]:
        """Names deployed from this store and not deleted since: what a restarted cluster should run."""
        if not self.fs.exists(self.root):
            return []
        names = sorted(path.rstrip("/").rsplit("/", 1)[-1] for path in self.fs.ls(self.root, detail=False))
        return [name for name in names if self.current_version(name) and not self.fs.exists(self._path(name, DELETED))]

    def deploys(self, name: str) -> list[dict[str, str]]:
        """Deploy records of ``name``, oldest first."""
        folder = self._path(name, "deploys")
        if not self.fs.exists(folder):
            return []
        paths = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        return [json.loads(self.fs.cat_file(p)) for p in paths]

    def current_version(self, name: str) -> str | None:
        deploys = self.deploys(name)
        return deploys[-1]["version"] if deploys else None

    def versions(self, name: str) -> list[VersionInfo]:
        """Every stored version of ``name``, oldest first, with when each was deployed."""
        folder = self._path(name)
        if not self.fs.exists(folder):
            raise NotDeployedError(f"No versions of {name!r} in the artifact store {self.url}.")
        deploys = self.deploys(name)
        rows = []
        for path in self.fs.ls(folder, detail=False):
            version = path.rstrip("/").rsplit("/", 1)[-1]
            if version == "deploys" or not self.fs.exists(self._path(name, version, MANIFEST)):
                continue
            manifest = load_manifest(self.artifact_url(name, version))
            rows.append(
                VersionInfo(
                    version=version,
                    created_at=manifest.created_at,
                    deployed_at=[d["deployed_at"] for d in deploys if d["version"] == version],
                    current=bool(deploys) and deploys[-1]["version"] == version,
                    requirements=manifest.requirements,
                )
            )
        return sorted(rows, key=lambda row: row.created_at)

    def previous_version(self, name: str) -> str:
        """The version deployed before the current one."""
        deploys = self.deploys(name)
        if not deploys:
            raise NotDeployedError(f"No model named {name!r} has been deployed from the artifact store {self.url}.")
        current = deploys[-1]["version"]
        for record in reversed(deploys):
            if record["version"] != current:
                return record["version"]
        raise NotDeployedError(f"{name!r} has no earlier deployed version to roll back to.")


def load_manifest(artifact_url: str) -> Manifest:
    with fsspec.open(f"{artifact_url.rstrip('/')}/{MANIFEST}", "rb") as file:
        return Manifest.model_validate_json(file.read())


class ArtifactTampered(LambdamlError):
    """An artifact's code is not what was stored with its manifest: it is never unpickled."""


def load_code(artifact_url: str, manifest: Manifest) -> bytes:
    """The artifact's code, checked against its manifest's hash before anyone unpickles it."""
    with fsspec.open(f"{artifact_url.rstrip('/')}/{CODE}", "rb") as file:
        code = file.read()
    found = hashlib.sha256(code).hexdigest()
    if found != manifest.code_sha256:
        raise ArtifactTampered(
            f"The code of {artifact_url} has SHA-256 {found}, but its manifest says "
            f"{manifest.code_sha256 or 'nothing'}: it was changed after lambdaml stored it, so it is not loaded. "
            "Deploy the model again to store a fresh artifact."
        )
    return code
