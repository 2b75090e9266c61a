"""Replicate-style prediction objects: ``lambdaml.predictions.create(name, input)``.

Works from any Python process that can reach the predictions API
(``LAMBDAML_URL``, or the local cluster's); no Ray needed.
"""

from __future__ import annotations

from typing import Any

from lambdaml.client import create_prediction
from lambdaml.schema import Prediction

__all__ = ["Prediction", "create"]


def create(name: str, input: dict[str, Any] | None = None, timeout: float = 600.0) -> Prediction:
    """Run one prediction and return it whatever its status: ``.id, .status, .output, .error, .logs, .metrics``.

    Invalid input raises ``InputError``; a model that is not deployed raises ``NotDeployedError``.
    """
    return Prediction.model_validate(create_prediction(name, input or {}, timeout))
