"""Errors lambdaml raises, each written for someone who has never seen the code."""

from __future__ import annotations

from typing import Any


class LambdamlError(Exception):
    """Base class: the message says what failed and what to do."""


class ConfigError(LambdamlError, ValueError):
    """A bad ``@model(...)`` parameter, raised at decoration time."""


class ClusterError(LambdamlError):
    """The Ray cluster could not be started or reached."""


class AuthError(LambdamlError, PermissionError):
    """The API refused the caller's token (missing, revoked, or without the role the call needs)."""


class DeployError(LambdamlError):
    """A deployment did not become ready."""


class NotDeployedError(LambdamlError):
    """A model was called by name but no deployment of it exists."""


class PredictionNotFoundError(LambdamlError, LookupError):
    """No prediction record has the id asked for (never created, or another cluster's)."""


class InputError(LambdamlError, ValueError):
    """Inputs failed validation; ``invalid_fields`` names each one and its constraint."""

    def __init__(self, message: str, invalid_fields: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.invalid_fields = invalid_fields or []


class ModelError(LambdamlError):
    """The model's own code failed; ``prediction`` carries the failed prediction (``.error``, ``.logs``, ...)."""

    def __init__(self, prediction: Any):
        super().__init__(getattr(prediction, "error", None) or "The prediction failed")
        self.prediction = prediction


class WaitTimeoutError(LambdamlError, TimeoutError):
    """A prediction did not end in the time a caller waited; ``prediction`` is it as last seen."""

    def __init__(self, message: str, prediction: Any):
        super().__init__(message)
        self.prediction = prediction
