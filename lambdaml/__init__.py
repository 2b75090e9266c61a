"""lambdaml: serve an ML model as easily as writing a function.

    from lambdaml import model, Input

    @model(gpu="A100", min=0, max=50)
    def caption(image: str = Input(description="Photo URL")) -> str: ...

    caption.deploy()           # Ray Serve application at /caption
    caption.remote(image=...)  # run it on the cluster

Importing lambdaml does not import Ray; the cluster is reached on first use.
"""

from lambdaml.client import create_prediction, run
from lambdaml.cluster import shutdown
from lambdaml.deploy import Deployment, reconfigure, rollback, versions
from lambdaml.errors import (
    AuthError,
    ClusterError,
    ConfigError,
    DeployError,
    InputError,
    LambdamlError,
    ModelError,
    NotDeployedError,
    PredictionNotFoundError,
    WaitTimeoutError,
)
from lambdaml import canary, cost, files, predictions, trainings
from lambdaml.files import Path
from lambdaml.inputs import Input, Secret
from lambdaml.model import Model, model

__all__ = [
    "AuthError",
    "ClusterError",
    "ConfigError",
    "DeployError",
    "Deployment",
    "Input",
    "InputError",
    "LambdamlError",
    "Model",
    "ModelError",
    "NotDeployedError",
    "Path",
    "PredictionNotFoundError",
    "Secret",
    "WaitTimeoutError",
    "canary",
    "cost",
    "create_prediction",
    "files",
    "predictions",
    "model",
    "reconfigure",
    "rollback",
    "run",
    "shutdown",
    "trainings",
    "versions",
]
