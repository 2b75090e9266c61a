"""Errors lambdaml raises, each written for someone who has never seen the code."""

from __future__ import annotations

import pathlib
import traceback
from typing import Any


class LambdamlError(Exception):
    """Base class: the message says what failed and what to do."""


class ConfigError(LambdamlError, ValueError):
    """A bad ``@model(...)`` parameter, raised at decoration time."""


def code_error(exc: Exception, path: pathlib.Path) -> ConfigError:
    """A user's file failed to load: ``file, line N: Error: message``, in one line (the user's code is at fault)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f"{exc.filename or path}, line {exc.lineno}"
    else:  # the deepest frame in the file, else the file
        ours = [frame for frame in traceback.extract_tb(exc.__traceback__) if pathlib.Path(frame.filename) == path.resolve()]
        where = f"{path}, line {ours[-1].lineno}" if ours else str(path)
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return ConfigError(f"{where}: {type(exc).__name__}: {message} (--debug shows the traceback)")


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
