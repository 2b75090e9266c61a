"""Trainings: what a trainer replica (``{name}-train``) does when a training succeeds, and how a model reaches it.

A trainer is an ordinary model application whose predictions are called trainings
(``Manifest.trains`` names the model it trains). Its output files go next to the model's
artifacts (``{store}/{name}/weights/{training id}/``), where every replica of the model can
read them. When the training function returns, ``Trainer.finish`` stores the model's current
version again with ``Manifest.weights`` set (the same code, so a new version id), runs it as
the model's application with the settings it runs with now, and registers it in the catalog:
the training's output becomes Replicate's ``{"version": "lambdaml/{name}:{id}", "weights": URL}``. A step that
fails fails the training, saying which, so a training never succeeds without its version.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from lambdaml import _clock, _installs
from lambdaml._http import JSONAnswer, error_response, location
from lambdaml._settings import TRAINER_SUFFIX
from lambdaml.artifacts import ArtifactStore, Manifest, load_code, load_manifest
from lambdaml.control.auth import Caller
from lambdaml.control.v1 import OWNER

def store_url(artifact: str) -> str:
    """The artifact store an artifact URL (``{store}/{name}/{version}``) belongs to."""
    return artifact.rstrip("/").rsplit("/", 2)[0]


def weights_location(artifact: str, model: str) -> str:
    """Where a trainer of ``model`` puts trained weights: beside the model's artifacts."""
    return f"{store_url(artifact)}/{model}/weights"


def trained_weights(output: Any) -> str:
    """The weights' URL in a training function's output: a ``Path``, or an object with a ``weights`` one (Cog's)."""
    if isinstance(output, dict):
        output = output.get("weights")
    if not isinstance(output, str) or output.startswith("data:"):
        raise ValueError("the training function must return the trained weights as a Path (or an object whose "
                         f"weights field is one), not {type(output).__name__}")
    return output.split("?", 1)[0]  # a presigned URL expires; the model's replicas read it with the store's credentials


def publish(artifact: str, model: str, weights: str, environment: dict[str, str], debug: bool,
            price_per_hour: float | None) -> Manifest:
    """Store and run a new version of ``model``: its current one with ``weights``. Blocking (Serve and the store)."""
    from ray import serve

    from lambdaml.app import build_with_fingerprint

    store = ArtifactStore(store_url(artifact))
    current = store.current_version(model)
    if current is None:
        raise LookupError(f"{model} has no deployed version to give the weights to")
    source = store.artifact_url(model, current)
    manifest = load_manifest(source)
    saved = store.save(manifest.model_copy(update={"weights": weights}), load_code(source, manifest))
    settings = store.deployed_settings(model, current) or manifest.model_spec().settings()
    spec = saved.model_spec()
    app, _ = build_with_fingerprint({
        "artifact": store.artifact_url(model, saved.version),
        "install": _installs.missing(saved.requirements, _installs.cluster_environment("")[1]),
        "secrets": {name: os.environ[name] for name in spec.secrets if name in os.environ},  # the trainer has them too
        "environment": environment, "debug": debug, "settings": settings, "price_per_hour": price_per_hour,
    })
    serve.run_many([serve.RunTarget(target=app, name=model, route_prefix=f"/{model}")], wait_for_applications_running=False)
    store.record_deploy(model, saved.version, settings)
    return saved


class Trainer:
    """The part of a trainer replica that turns a finished training into a version of its model."""

    def __init__(self, artifact: str, model: str, environment: dict[str, str], debug: bool,
                 price_per_hour: float | None, control: Callable[..., Awaitable[Any]]):
        self.model = model
        self._publish = (artifact, model, environment, debug, price_per_hour)
        self._control = control  # ModelServer._control_call: the catalog lives in the control application

    async def finish(self, training: dict[str, Any]) -> dict[str, Any]:
        """The training's final fields: with the new version as its output, or failed saying why not."""
        if training.get("status") != "succeeded":
            return training
        try:
            weights = trained_weights(training.get("output"))
            artifact, model, environment, debug, price = self._publish
            saved = await asyncio.to_thread(publish, artifact, model, weights, environment, debug, price)
            await self._control("register_model", model, saved.version, saved.created_at,
                                saved.model_spec().visibility, saved.openapi)
        except Exception as exc:
            return {**training, "status": "failed", "completed_at": _clock.now(),
                    "error": f"The training ran, but its weights could not become a version of {self.model}: {exc}"}
        version = f"{OWNER}/{self.model}:{saved.version}"  # Replicate's reference, which its client parses
        return {**training, "output": {"version": version, "weights": weights}, "completed_at": _clock.now()}


async def forward(name: str, raw: bytes, headers: dict[bytes, bytes], caller: Caller, handles: dict[str, Any]) -> Response:
    """``POST /{model}/trainings``: the training goes to the trainer ``name`` by a handle call, as from ``/v1``."""
    model = name.removesuffix(TRAINER_SUFFIX)
    try:
        if name not in handles:
            from ray import serve

            handles[name] = await asyncio.to_thread(serve.get_app_handle, name)
        status, body = await handles[name].create_forwarded.remote(raw, headers, caller)
    except Exception:
        return error_response(404, "Not found", f"{model} has no training function to run: give it one with "
                              "@model(train=...) or cog.yaml's train, and deploy it again.")
    return JSONAnswer(body, status, location(json.loads(body)) if status in (200, 202) else None)
