"""Trainings: run a model's training function; one that succeeds makes a new version of the model.

A model deployed with ``@model(train=fn)`` (or a Cog project whose cog.yaml has ``train``)
has a second application, ``{name}-train``, whose predictions are trainings
(``POST /{name}-train/trainings``, Cog's API). A training is recorded like a prediction, so
the object returned here is a ``Prediction``: ``wait``, ``reload`` and ``cancel`` work on it
through ``/v1/trainings/{id}``. When it succeeds, its output is
``{"version": "lambdaml/{name}:{id}", "weights": URL}``: the model now runs that version, whose
``setup(weights=...)`` receives the trained weights. See docs/training.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from lambdaml import client
from lambdaml._settings import TRAINER_SUFFIX
from lambdaml.predictions import cancel_after_header, prefer_header, request_body
from lambdaml.schema import Prediction

__all__ = ["cancel", "create", "get"]


def create(
    name: str,
    input: dict[str, Any] | None = None,
    wait: bool | float = True,
    *,
    webhook: str | None = None,
    webhook_events_filter: Iterable[str] | None = None,
    cancel_after: float | str | None = None,
) -> Prediction:
    """Start a training of the model ``name`` and return it (finished, with ``wait=True``).

    The arguments are ``predictions.create``'s. Needs an admin token once the API needs tokens:
    a training changes the version the model runs. ``InputError`` for inputs the training
    function does not take; ``NotDeployedError`` if the model has no trainer deployed.
    """
    headers = {**prefer_header(wait), **cancel_after_header(cancel_after)}
    hold = None if wait is True else 0.0 if wait is False else float(wait)
    body = request_body(input, webhook, webhook_events_filter)
    training = Prediction.model_validate(client.submit(name + TRAINER_SUFFIX, body, headers, hold, collection="trainings"))
    return training.wait() if wait is True else training


def get(id: str) -> Prediction:
    """The training with this id, as the cluster has it now (``PredictionNotFoundError`` if none)."""
    return Prediction.model_validate(client.api_call("GET", client.v1_url(f"/trainings/{quote(id, safe='')}"),
                                                     f"reading training {id}"))


def cancel(id: str) -> Prediction:
    """Ask the cluster to stop the training ``id``; returns its record. A canceled training makes no version."""
    return Prediction.model_validate(client.api_call("POST", client.v1_url(f"/trainings/{quote(id, safe='')}/cancel"),
                                                     f"canceling training {id}"))
