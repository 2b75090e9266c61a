"""Canary deploys: a new version beside the live one, taking a share of new predictions until
it is promoted or dropped.

``lambdaml deploy FILE --canary 10`` stores the new version as any deploy does, runs it as
the Serve application ``{name}.canary`` (no HTTP route of its own), waits until it runs, and
then publishes ``{app, percent, version, settings, since}`` in Ray's key-value store. The
live version's replicas read that and hand the share to the canary
(``lambdaml.serve.canary``). Both versions write their records under the model's name, each
with its own version, so ``compare`` reads side by side how each did since the canary began.

``promote`` rolls the live application to the canary's version (Serve replaces replicas
one by one, each finishing its requests), then withdraws and deletes the canary;
``drop`` (what ``lambdaml rollback`` does while a canary runs) withdraws and deletes it.
A request a live replica hands to a canary that is going away is answered by the live
replica itself, so neither fails a request.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from lambdaml import cluster
from lambdaml._settings import CANARY_SUFFIX, CONTROL_APP
from lambdaml.errors import ConfigError, DeployError, NotDeployedError

if TYPE_CHECKING:  # lambdaml.deploy imports this module when a deploy asks for a canary
    from lambdaml.artifacts import ArtifactStore, Manifest
    from lambdaml.deploy import Deployment, Plan, Progress

# Long enough for every live replica to have reread the key (lambdaml.serve.canary.REFRESH_S)
# after it changed, so that none still hands requests to a canary being deleted.
SETTLE_S = 2.5


def _key(name: str) -> str:
    from lambdaml.serve.canary import kv_key

    return kv_key(name)


def current(name: str) -> dict[str, Any] | None:
    """The canary of ``name``, if one runs: ``app``, ``percent``, ``version``, ``settings``, ``since``."""
    from lambdaml.serve.canary import published

    cluster.connect()
    return published(name)


def check_can_start(name: str, percent: float) -> None:
    """Refuse a canary that cannot be: a share outside 1-99, or no live version to compare with."""
    from lambdaml.deploy import app_status

    if not 0 < percent < 100:
        raise ConfigError(f"--canary {percent:g}: the canary's share must be a percentage between 1 and 99")
    try:
        app_status(name)
    except NotDeployedError:
        raise DeployError(
            f"{name!r} has no live version for a canary to run beside: deploy it first without --canary"
        ) from None


def start(store: ArtifactStore, manifest: Manifest, settings: dict[str, Any], secrets: dict[str, str],
          planned: Plan, percent: float, timeout: float, progress: Progress) -> Deployment:
    """Run ``manifest``'s version as the canary of its model and give it ``percent`` of new predictions."""
    from lambdaml.cluster.ray_internals import kv_put
    from lambdaml.deploy import run_stored

    name = manifest.name
    live = store.current_version(name)
    if live == manifest.version:
        raise DeployError(f"version {live} of {name!r} is already live: a canary must be a new version")
    deployment = run_stored(store, manifest, settings, secrets, planned, True, timeout, progress, canary=True)
    kv_put(_key(name), json.dumps({"app": name + CANARY_SUFFIX, "percent": percent, "version": manifest.version,
                                   "live": live, "settings": settings, "since": time.time()}))
    progress("canary", f"version {manifest.version} takes {percent:g}% of {name}'s new predictions")
    return deployment


def promote(name: str, timeout: float = 300.0) -> Deployment:
    """Make the canary of ``name`` its live version (rolling: no request fails), then remove the canary."""
    from lambdaml.deploy import redeploy, store_for, stored_manifest

    canary = _running(name)
    store = store_for(cluster.connect())
    deployment = redeploy(store, stored_manifest(store, name, canary["version"]), canary["settings"], True, timeout,
                           lambda stage, detail: None)
    _withdraw(name)
    return deployment


def drop(name: str) -> dict[str, Any]:
    """Stop the canary of ``name``: every new prediction goes to the live version again. Returns the canary."""
    canary = _running(name)
    _withdraw(name)
    return canary


def compare(name: str) -> dict[str, dict[str, Any]]:
    """How each version of ``name`` did since its canary began (or in the last hour): by version,
    ``count``, ``failed``, ``error_rate``, ``p50`` and ``p95`` of the total time, in seconds."""
    canary = current(name)
    since = canary["since"] if canary else time.time() - 3600
    return cluster.call_app(CONTROL_APP, "version_stats", name, since, timeout_s=30)


def _running(name: str) -> dict[str, Any]:
    canary = current(name)
    if canary is None:
        raise NotDeployedError(f"{name!r} has no canary running (`lambdaml deploy FILE --canary 10` starts one).")
    return canary


def _withdraw(name: str, settle: bool = True) -> None:
    from ray import serve

    from lambdaml.cluster.ray_internals import kv_delete

    kv_delete(_key(name))
    if settle:
        time.sleep(SETTLE_S)  # the live replicas stop handing requests to it
    cluster.forget_handle(name + CANARY_SUFFIX)
    serve.delete(name + CANARY_SUFFIX)  # its replicas finish the predictions they hold first


def remove(name: str) -> None:
    """The model ``name`` is being deleted: its canary goes too, if it has one."""
    if current(name) is not None:
        _withdraw(name, settle=False)
