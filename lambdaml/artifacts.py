"""The package stage, storage side: versioned artifacts in an fsspec store.

An artifact is two files under ``{store}/{name}/{version}/``: ``model.pkl``
(the cloudpickled model) and ``manifest.json`` (spec, pinned requirements,
variables, secret *names*, Python version). The version id is the hash of
both contents (creation time excluded), so identical code and settings give
the same id. Each deploy also writes a small record under
``{store}/{name}/deploys/``; together they answer "what ran when" and let
``rollback`` find the previous version. The store is a local directory by
default, or ``s3://`` / ``gs://`` for clusters on other machines.

Nothing in the store is trusted for being there: each manifest is signed with the
cluster's key (``lambdaml._signing``), and it and the code it names are checked before
anything reads requirements from it or unpickles it (``load_manifest``, ``load_code``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import fsspec
from pydantic import BaseModel, Field

from lambdaml import _clock, _signing
from lambdaml._pickling import for_hashing
from lambdaml._settings import artifact_store_url
from lambdaml.errors import LambdamlError, NotDeployedError
from lambdaml.spec import SETTINGS, ModelSpec

MANIFEST = "manifest.json"
CODE = "model.pkl"
DELETED = "deleted.json"  # in a model's folder while it is deleted
SIGNATURES = "signatures"  # {artifact}/signatures/{key id}: the manifest's HMAC, one per cluster key


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
    # The model's OpenAPI document, so /v1 describes a version without loading its code (None in
    # artifacts made before it was kept). Derived from the code and spec, so not part of the version.
    openapi: dict[str, Any] | None = None
    # A trained version: the URL of the weights its setup(weights=...) receives (a copy of the
    # model's code with a training's output: lambdaml.serve.training).
    weights: str | None = None
    # A trainer (the `{name}-train` application of a model with a train function): the model
    # its trainings make new versions of.
    trains: str | None = None

    def model_spec(self) -> ModelSpec:
        return ModelSpec.model_validate(self.spec, context={"stored": True})


class VersionInfo(BaseModel):
    """One row of ``lambdaml.versions(name)``."""

    version: str
    created_at: str
    deployed_at: list[str] = Field(default_factory=list)
    current: bool = False
    requirements: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)  # hardware and scaling it last ran with (spec.SETTINGS)


def content_version(manifest: Manifest, code: bytes) -> str:
    """Hash of the code and the manifest's content (not its timestamp): the same in every process.

    The deployment settings (``spec.SETTINGS``: hardware and scaling) are not part of it: the
    same code on an H100 is the same version, as on Replicate. Each deploy record says with
    which settings that version ran. 80 bits: two different artifacts of one model sharing a
    version by chance is out of reach.
    """
    digest = hashlib.sha256(for_hashing(code))
    excluded = {"version": True, "created_at": True, "code_sha256": True, "openapi": True,
                "spec": {setting: True for setting in SETTINGS}}
    excluded.update({field: True for field in ("weights", "trains") if getattr(manifest, field) is None})  # older versions keep their ids
    digest.update(manifest.model_dump_json(exclude=excluded).encode())
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
        """Store the artifact under its content version, signed with this cluster's key.

        An artifact already stored under that version is kept (with its creation time, and the
        settings of the deploy that first stored it) only if it is this code: anything else
        there was not written by lambdaml, and is replaced rather than signed.
        """
        manifest = manifest.model_copy(update={"code_bytes": len(code), "code_sha256": hashlib.sha256(code).hexdigest()})
        version = content_version(manifest, code)
        key = _signing.cluster_key(create=True)
        folder = self._path(manifest.name, version)
        stored = self._stored_as_built(folder, version)
        if stored is None:
            stored = manifest.model_copy(update={"version": version, "created_at": _clock.now()}).model_dump_json(indent=2).encode()
            self.fs.makedirs(folder, exist_ok=True)
            self.fs.pipe_file(f"{folder}/{CODE}", code)
            self.fs.pipe_file(f"{folder}/{MANIFEST}", stored)  # after the code: marks it complete
        self.fs.makedirs(f"{folder}/{SIGNATURES}", exist_ok=True)
        self.fs.pipe_file(f"{folder}/{SIGNATURES}/{_signing.key_id(key)}", _signing.sign(key, stored).encode())
        return Manifest.model_validate_json(stored)

    def _stored_as_built(self, folder: str, version: str) -> bytes | None:
        """The stored manifest's bytes if the artifact in ``folder`` is whole and of ``version``.

        The version is a hash of the code and the spec (hardware and scaling aside), so an artifact whose own contents give
        that version is what this deploy built (its pickle may differ in ids ``_pickling``
        blanks for hashing, which is why the bytes are not compared with the new build).
        """
        try:
            stored, code = self.fs.cat_file(f"{folder}/{MANIFEST}"), self.fs.cat_file(f"{folder}/{CODE}")
            existing = Manifest.model_validate_json(stored)
        except (FileNotFoundError, ValueError):
            return None
        whole = existing.code_sha256 == hashlib.sha256(code).hexdigest()
        return stored if whole and content_version(existing, code) == version == existing.version else None

    def record_deploy(self, name: str, version: str, settings: dict[str, Any]) -> None:
        """Note that ``version`` of ``name`` was deployed now with ``settings`` (unless that is what runs already)."""
        if self.fs.exists(deleted := self._path(name, DELETED)):
            self.fs.rm(deleted)
        deploys = self.deploys(name)
        if deploys and deploys[-1]["version"] == version and deploys[-1].get("settings") == settings:
            return
        stamp = _clock.now()
        record = json.dumps({"version": version, "deployed_at": stamp, "settings": settings}).encode()
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

    def deployed_settings(self, name: str, version: str) -> dict[str, Any] | None:
        """The settings ``version`` of ``name`` last ran with (None: never deployed, or before deploys kept them)."""
        return next((d.get("settings") for d in reversed(self.deploys(name)) if d["version"] == version), None)

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
            manifest = Manifest.model_validate_json(self.fs.cat_file(self._path(name, version, MANIFEST)))  # shown only
            rows.append(
                VersionInfo(
                    version=version,
                    created_at=manifest.created_at,
                    deployed_at=[d["deployed_at"] for d in deploys if d["version"] == version],
                    current=bool(deploys) and deploys[-1]["version"] == version,
                    requirements=manifest.requirements,
                    settings=self.deployed_settings(name, version) or manifest.model_spec().settings(),
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


class ArtifactTampered(LambdamlError):
    """An artifact is not what a deployer of this cluster stored: it is never used."""


def load_manifest(artifact_url: str) -> Manifest:
    """The artifact's manifest, once its signature shows a deployer of this cluster stored it."""
    folder = artifact_url.rstrip("/")
    with fsspec.open(f"{folder}/{MANIFEST}", "rb") as file:
        stored = file.read()
    key = _signing.cluster_key()
    try:
        with fsspec.open(f"{folder}/{SIGNATURES}/{_signing.key_id(key)}", "rb") as file:
            signature = file.read().decode(errors="replace")
    except FileNotFoundError:
        raise ArtifactTampered(
            f"{artifact_url} is not signed with this cluster's key, so it is not loaded: lambdaml signs each "
            "artifact it stores for the cluster it deploys to, so this one was stored by something else or "
            "for another cluster. Deploy the model from its source (`lambdaml deploy FILE`) to store it here."
        ) from None
    if not _signing.signed_by(key, stored, signature):
        raise ArtifactTampered(
            f"The manifest of {artifact_url} does not match its signature: it was changed after lambdaml stored "
            "it, so it is not loaded. Deploy the model from its source to store a fresh artifact."
        )
    return Manifest.model_validate_json(stored)


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
