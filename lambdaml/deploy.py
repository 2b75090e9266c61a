"""The deploy stage: a model becomes a versioned Ray Serve application.

``deploy`` packages the model into an artifact (``lambdaml.package``), stores
it (``lambdaml.artifacts``), works out what the cluster must install
(``lambdaml._installs``) and runs it through the Serve application builder
(``lambdaml.app``). ``rollback`` and ``versions`` work from the store alone,
so they need none of the model's code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import httpx

from lambdaml import _forwarding, _installs, _secrets, cluster, cost
from lambdaml._settings import CANARY_SUFFIX, CONTROL_APP, TRAINER_SUFFIX, debug_enabled
from lambdaml.app import build_with_fingerprint
from lambdaml.cost import Estimate
from lambdaml.placement import ClusterShape, Placement, check_fits, cluster_shape, place
from lambdaml.artifacts import ArtifactStore, Manifest, VersionInfo, load_manifest
from lambdaml.errors import DeployError, LambdamlError, NotDeployedError
from lambdaml.model import Model
from lambdaml.package import build as build_artifact
from lambdaml.spec import ModelSpec

@dataclass(frozen=True)
class Deployment:
    """A model running on the cluster."""

    name: str
    url: str
    version: str
    dashboard_url: str

    def delete(self) -> None:
        """Remove the application and its replicas."""
        delete(self.name)

    def status(self) -> dict[str, Any]:
        """Serve's view of the application: its status and its replicas' states."""
        return app_status(self.name)


def store_for(info: cluster.ClusterInfo) -> ArtifactStore:
    store = ArtifactStore()
    local_store = "://" not in store.url or store.url.startswith("file://")
    if local_store and not (info.embedded or cluster.is_loopback(info.address)):
        raise DeployError(
            f"Artifacts are stored in the local folder {store.url}, which replicas on the cluster at "
            f"{info.address} cannot read. Set LAMBDAML_ARTIFACTS to a bucket they can reach "
            "(s3://bucket/lambdaml or gs://bucket/lambdaml)."
        )
    return store


Progress = Callable[[str, str], None]  # (stage, detail): what deploy is doing, for the CLI's live display


def _quiet(stage: str, detail: str) -> None:
    pass


def deploy(model: Model, wait: bool = True, timeout: float = 300.0, progress: Progress = _quiet,
           settings: dict[str, Any] | None = None, canary: float | None = None) -> Deployment:
    """Package ``model``, store the artifact, run it as a Serve application and (by default) wait for it.

    ``settings``: hardware and scaling over what ``@model(...)`` says (``spec.SETTINGS``), for
    this deploy; the same code is the same version whatever they are. ``canary``: a percentage;
    the new version runs beside the live one and takes that share of new predictions
    (``lambdaml.canary``: ``promote`` or ``drop`` it).
    """
    if canary is None:
        trainer = model.trainer()
        _check_trainer_names(model, trainer)
        staged = stage(model, settings, progress)
        if trainer is not None:  # staged first too, so a bad training function stops the deploy before anything runs
            hardware = {key: value for key, value in (settings or {}).items() if key in ("gpu", "cpu", "memory")}
            trainer_staged = stage(trainer, hardware, progress)  # the model's hardware, from zero replicas
        deployment = run_stored(*staged, wait, timeout, progress)
        if trainer is not None:
            progress("trainer", f"deploying {trainer.name}, which serves {model.name}'s trainings")
            run_stored(*trainer_staged, wait, timeout, progress)
        return deployment
    from lambdaml import canary as canaries

    canaries.check_can_start(model.name, canary)
    return canaries.start(*stage(model, settings, progress), canary, timeout, progress)


def _check_trainer_names(model: Model, trainer: Model | None) -> None:
    """``{name}-train`` is the trainer of ``name``: no model may take a trainer's name, nor a trainer a model's."""
    store = store_for(cluster.connect())
    live = store.live_models()

    def trains(name: str) -> str | None:  # the model the deployed application ``name`` trains, if it is a trainer
        return load_manifest(store.artifact_url(name, store.current_version(name))).trains if name in live else None

    if model.trains is None and (trained := trains(model.name)) is not None:
        raise DeployError(f"{model.name!r} is the trainer of {trained!r} (its training function); "
                          "give this model another name.")
    if trainer is not None and trainer.name in live and trains(trainer.name) != model.name:
        raise DeployError(f"{model.name!r} has a training function, which runs as {trainer.name!r}, but a model of "
                          f"that name is deployed. Delete it (`lambdaml delete {trainer.name}`) or rename one of them.")


Staged = tuple[ArtifactStore, Manifest, dict[str, Any], dict[str, str], "Plan"]  # what run_stored takes first


def stage(model: Model, settings: dict[str, Any] | None = None, progress: Progress = _quiet) -> Staged:
    """Everything a deploy does before anything runs: check, plan, package and store ``model``.

    Returns the store, the stored manifest, the settings, the secret values and the plan.
    """
    spec = model.spec.with_settings(settings or {})  # checked before anything else happens, with @model's messages
    info = cluster.connect()
    model.schema  # describe now: a bad annotation fails here, not in a replica
    progress("environment", "checking the cluster's Python and packages")
    python, _ = _installs.cluster_environment(info.address)
    _installs.check_python(python)
    secrets = _secrets.secret_values(model.spec.secrets)
    planned = plan(spec)
    progress("cost", planned.estimate.line())
    progress("environment", "capturing code and packages")
    manifest, code = build_artifact(model, secrets)
    store = store_for(info)
    progress("upload", f"storing the artifact in {store.url}")
    return store, store.save(manifest, code), spec.settings(), secrets, planned


@dataclass(frozen=True)
class Plan:
    """Where a model would run on the connected cluster, and what that costs an hour."""

    spec: ModelSpec
    shape: ClusterShape
    placement: Placement
    estimate: Estimate


def plan(spec: ModelSpec) -> Plan:
    """What deploying ``spec`` would run and cost (``lambdaml deploy --dry-run``); changes nothing.

    DeployError if no node the cluster has or can add could hold a replica.
    """
    info = cluster.connect()
    shape = cluster_shape()  # read once: the fit check, the estimate and the Serve options all use it
    placement = place(spec, shape)
    check_fits(spec.name, placement, shape, info.embedded)
    return Plan(spec, shape, placement, cost.estimate(spec.min, spec.max, placement.needs, shape))


def rollback(
    name: str, version: str | None = None, wait: bool = True, timeout: float = 300.0, progress: Progress = _quiet
) -> Deployment:
    """Redeploy the version of ``name`` deployed before the current one, or ``version``, with the
    hardware and scaling it last ran with. While a canary runs (and no version is given), drop the
    canary instead: the live version takes every prediction again."""
    from lambdaml import canary

    info = cluster.connect()
    store = store_for(info)
    if version is None and canary.current(name) is not None:
        canary.drop(name)
        return Deployment(name, f"{info.http_url}/{name}", store.current_version(name) or "", info.dashboard_url)
    version = version or store.previous_version(name)
    manifest = stored_manifest(store, name, version)
    settings = store.deployed_settings(name, version) or manifest.model_spec().settings()
    return redeploy(store, manifest, settings, wait, timeout, progress)


def reconfigure(name: str, /, *, wait: bool = True, timeout: float = 300.0, progress: Progress = _quiet,
                **changes: Any) -> Deployment:
    """Change the hardware or scaling of a running model (``spec.SETTINGS``: ``gpu``, ``min``, ``max``...)
    without a new version: its replicas are replaced by ones with the new settings, one by one."""
    store = store_for(cluster.connect())
    version = store.current_version(name)
    if version is None:
        raise NotDeployedError(f"No model named {name!r} has been deployed from the artifact store {store.url}.")
    manifest = stored_manifest(store, name, version)
    spec = manifest.model_spec()
    spec = spec.with_settings(store.deployed_settings(name, version) or {}).with_settings(changes)
    return redeploy(store, manifest, spec.settings(), wait, timeout, progress)


def stored_manifest(store: ArtifactStore, name: str, version: str) -> Manifest:
    try:
        return load_manifest(store.artifact_url(name, version))
    except FileNotFoundError:
        known = ", ".join(v.version for v in store.versions(name))
        raise NotDeployedError(f"{name!r} has no version {version!r}; known versions: {known}") from None


def redeploy(store: ArtifactStore, manifest: Manifest, settings: dict[str, Any], wait: bool, timeout: float,
              progress: Progress) -> Deployment:
    """Run a stored version again, with ``settings``."""
    info = cluster.connect()
    _installs.check_python(_installs.cluster_environment(info.address)[0], manifest.python)
    spec = manifest.model_spec().with_settings(settings)
    secrets = _secrets.secret_values(spec.secrets)
    planned = plan(spec)
    progress("cost", planned.estimate.line())
    return run_stored(store, manifest, settings, secrets, planned, wait, timeout, progress)


def restore(progress: Progress = _quiet) -> tuple[list[Deployment], dict[str, str]]:
    """After ``lambdaml down`` or a reboot: every model the store says was deployed and not deleted,
    that is not running, at its last deployed version. Returns those deployed and, by name, why others could not be."""
    from ray import serve

    info = cluster.connect()
    store = store_for(info)
    running = set(serve.status().applications)
    brought, failed = [], {}
    for name in store.live_models():
        if name in running:
            continue
        try:
            brought.append(rollback(name, version=store.current_version(name), progress=progress))
        except (LambdamlError, FileNotFoundError) as exc:  # a secret not set here, a version gone: the others go on
            failed[name] = str(exc)
    return brought, failed


def versions(name: str) -> list[VersionInfo]:
    """Stored versions of ``name``, oldest first, with deploy times; no secret values."""
    return ArtifactStore().versions(name)


def run_stored(
    store: ArtifactStore,
    manifest: Manifest,
    settings: dict[str, Any],
    secrets: dict[str, str],
    planned: Plan,
    wait: bool,
    timeout: float,
    progress: Progress,
    canary: bool = False,
) -> Deployment:
    """Run a stored version as the model's application, or (``canary``) as its canary: an application
    with no route, which only the live version's replicas hand requests to (``lambdaml.canary``)."""
    from ray import serve

    info = cluster.connect()
    spec = manifest.model_spec().with_settings(settings)
    app_name = spec.name + CANARY_SUFFIX if canary else spec.name
    install = _installs.missing(manifest.requirements, _installs.cluster_environment(info.address)[1])
    if install:
        progress("install", f"checking that pip can install {', '.join(install)} on the cluster")
        _installs.check_installable(info.address, spec.name, install)
        progress("install", f"the cluster will install {', '.join(install)} (cached after the first time)")
    artifact = store.artifact_url(spec.name, manifest.version)
    app, fingerprint = build_with_fingerprint(
        {
            "artifact": artifact,
            "install": install,
            "secrets": secrets,
            "environment": _forwarding.forwarded_environment(),
            "debug": debug_enabled(),
            "settings": settings,
            "price_per_hour": planned.estimate.per_replica,
        },
        planned.shape,
    )
    progress("records", "checking the prediction records service")
    from lambdaml.control.app import ensure_running

    ensure_running()  # replicas send their records there from their first prediction on
    if _running_with(app_name, fingerprint):
        progress("replicas", f"version {manifest.version} is running with these settings: its replicas are kept")
    else:
        progress("replicas", f"starting version {manifest.version}" + (" as a canary" if canary else ""))
        target = serve.RunTarget(target=app, name=app_name, route_prefix=None if canary else f"/{spec.name}")
        serve.run_many([target], wait_for_applications_running=False)
    if wait or canary:  # a canary takes traffic only once it runs
        deadline = time.monotonic() + timeout
        _wait_until_running(app_name, spec.min, deadline, progress)
    if canary:
        return Deployment(spec.name, f"{info.http_url}/{spec.name}", manifest.version, info.dashboard_url)
    if wait:
        progress("route", f"waiting for {info.http_url}/{spec.name} to answer")
        _wait_for_route(info.http_url, spec.name, deadline, spec.min > 0)
    store.record_deploy(spec.name, manifest.version, settings)
    if manifest.trains is None:  # a trainer is reached through its model's /v1 routes, not listed as a model
        cluster.call_app(CONTROL_APP, "register_model", spec.name, manifest.version, manifest.created_at,
                         spec.visibility, manifest.openapi)  # what /v1/models shows
    return Deployment(spec.name, f"{info.http_url}/{spec.name}", manifest.version, info.dashboard_url)


def _running_with(name: str, fingerprint: str) -> bool:
    """Whether ``name`` runs, settled, on replicas made of exactly this (a redeploy would only restart them)."""
    try:
        state = app_status(name)
    except NotDeployedError:
        return False
    if state["status"] != "RUNNING" or not state["replicas"].get("RUNNING"):
        return False  # at zero replicas a redeploy restarts nothing; mid-rollout it must go through
    try:
        return cluster.call_app(name, "fingerprint", timeout_s=10) == fingerprint
    except Exception:  # an older lambdaml's replicas, or one that is stopping: deploy as usual
        return False


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def app_status(name: str) -> dict[str, Any]:
    """Status of one application: ``{"status", "message", "replicas": {state: count}}``."""
    from ray import serve

    cluster.connect()
    app = serve.status().applications.get(name)
    if app is None:
        raise NotDeployedError(f"No model named {name!r} is deployed on this cluster.")
    replicas: dict[str, int] = {}
    messages = [app.message] if app.message else []
    for deployment in app.deployments.values():
        for state, count in deployment.replica_states.items():
            replicas[_enum_value(state)] = replicas.get(_enum_value(state), 0) + count
        if deployment.message:
            messages.append(deployment.message)
    return {"status": _enum_value(app.status), "message": "\n".join(messages), "replicas": replicas}


def _wait_until_running(name: str, min_replicas: int, deadline: float, progress: Progress) -> None:
    shown = None
    while True:
        state = app_status(name)
        replicas = ", ".join(f"{count} {kind.lower()}" for kind, count in sorted(state["replicas"].items()))
        if replicas != shown:
            progress("replicas", f"replicas: {replicas or 'none yet'}")
            shown = replicas
        if state["status"] == "RUNNING":
            break
        if state["status"] in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise DeployError(f"Deploying {name!r} failed: {state['message'] or state['status']}")
        if time.monotonic() > deadline:
            raise DeployError(
                f"{name!r} was not ready in time ({state['status']}, replicas: "
                f"{state['replicas'] or 'none'}). {state['message']}".strip()
            )
        time.sleep(0.1)
    if min_replicas > 0:
        health = cluster.call_app(name, "health")
        if health["status"] == "SETUP_FAILED":
            setup = health["setup"]
            raise DeployError(
                f"{name!r} is deployed but its setup() failed: {setup['error']}\n"
                f"Setup logs:\n{setup['logs']}".rstrip()
            )


def _wait_for_route(http_url: str, name: str, deadline: float, replicas: bool) -> None:
    """Wait until the HTTP ingress routes ``/{name}``: HAProxy reloads shortly after Serve.

    With replicas running (``replicas``), also until a request reaches one: for a moment
    after a deploy HAProxy may still send it to Serve's fallback proxy, which may not
    know the route yet and answers 404.
    """
    while time.monotonic() < deadline:
        try:
            routes = httpx.get(f"{http_url}/-/routes", timeout=5).json()
        except httpx.ConnectError:
            return  # the ingress is not reachable from here (a remote cluster): nothing to wait for
        except (httpx.HTTPError, ValueError):
            routes = {}
        if routes.get(f"/{name}") == name and (not replicas or _answers(f"{http_url}/{name}/health-check")):
            return
        time.sleep(0.05)
    raise DeployError(f"{name!r} is running but the HTTP ingress at {http_url} does not route /{name} yet")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code != 404
    except httpx.HTTPError:
        return False


def delete(name: str) -> None:
    """Delete the application named ``name`` (no error if it is already gone)."""
    from ray import serve

    from lambdaml import canary

    info = cluster.connect()
    canary.remove(name)
    cluster.forget_handle(name)
    serve.delete(name)
    store = store_for(info)
    store.record_delete(name)  # so that `lambdaml up` does not bring it back
    cluster.call_app(CONTROL_APP, "forget_model", name)
    if name + TRAINER_SUFFIX in serve.status().applications:  # its trainer goes with it
        serve.delete(name + TRAINER_SUFFIX)
        store.record_delete(name + TRAINER_SUFFIX)
