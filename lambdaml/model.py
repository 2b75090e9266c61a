"""The declare stage: ``@model`` and the ``Model`` object it returns.

Like typer's decorators, ``@model`` only records: the spec is validated at once
(so a bad GPU name fails at import time), while the schema, the package and
the cluster connection are built when first needed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar, overload

from lambdaml._openapi import openapi
from lambdaml.schema import ModelSchema, Prediction, describe, predict_callable, resolve_defaults, type_hints
from lambdaml._settings import TRAINER_SUFFIX
from lambdaml.spec import ModelSpec, build_spec, kebab_case

if TYPE_CHECKING:
    from lambdaml.deploy import Deployment

T = TypeVar("T")


class Model:
    """A function or class made deployable by ``@model``.

    Calling it locally behaves as before (a function runs, a class builds an
    instance). ``deploy()`` puts it on the cluster, ``remote()`` runs it there.
    """

    trains: str | None = None  # set on a trainer (``trainer()``): the model its trainings make versions of

    def __init__(self, target: Any, spec: ModelSpec, train: Callable[..., Any] | None = None):
        functools.update_wrapper(self, target, updated=())
        self.target = target
        self.spec = spec
        self.train = train  # @model(train=fn): deployed as its own application, ``trainer()``

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.target)

    @functools.cached_property
    def schema(self) -> ModelSchema:
        return describe(self.target, self.__dict__.get("_type_hints"), batched=self.spec.batch is not None)

    def __getstate__(self) -> dict[str, Any]:
        # The schema holds dynamically created pydantic classes: rebuild, don't ship. Ship the
        # resolved annotations instead: with `from __future__ import annotations` they are
        # strings naming globals that code shipped by value does not carry.
        state = dict(self.__dict__)
        state.pop("schema", None)
        state.pop("train", None)  # the trainer is an artifact of its own (``trainer()``), not part of this one
        state["_type_hints"] = type_hints(predict_callable(self.target))
        return state

    def with_spec(self, spec: ModelSpec) -> "Model":
        """The same model with another spec (the package stage ships it without its settings)."""
        return Model(self.target, spec, self.train)

    def trainer(self) -> "Model | None":
        """The model's training function as a model of its own, ``{name}-train`` (None without one).

        Its predictions are trainings: its application serves ``POST /{name}-train/trainings``,
        and each training that succeeds makes a new version of this model whose
        ``setup(weights=...)`` receives the trained weights (``lambdaml.serve.training``).
        """
        if self.train is None:
            return None
        return as_trainer(Model(self.train, self.spec), self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_class:
            return self.target(*args, **kwargs)
        return self.target(**resolve_defaults(self.target, args, kwargs))

    def __repr__(self) -> str:
        return f"<lambdaml.Model {self.name!r} ({getattr(self.target, '__qualname__', self.target)})>"

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document this model serves at ``/{name}/openapi.json``."""
        return openapi(self.name, self.schema, "predictions" if self.trains is None else "trainings")

    def deploy(self, wait: bool = True, timeout: float = 300.0, canary: float | None = None,
               **settings: Any) -> "Deployment":
        """Deploy on the cluster (the embedded local one by default).

        Blocks until the application is running and, when ``min`` > 0, its
        replicas are set up; raises DeployError with the reason otherwise.
        ``settings`` override the decorator's hardware and scaling for this deploy
        (``gpu="H100", min=1``...): the version stays the same. ``canary=10`` runs
        the new version beside the live one with 10% of new predictions
        (``lambdaml.canary.promote`` or ``drop`` it).
        """
        from lambdaml.deploy import deploy

        return deploy(self, wait=wait, timeout=timeout, settings=settings, canary=canary)

    def remote(self, **inputs: Any) -> Any:
        """Run one prediction on the deployed model and return its output (an iterator for a generator model)."""
        from lambdaml.client import predict_remote, stream_remote

        if self.schema.streaming:
            return stream_remote(self.name, inputs, self.schema.file_fields)
        return predict_remote(self.name, inputs, self.schema.file_fields)

    def spawn(self, **inputs: Any) -> Prediction:
        """Start one prediction over HTTP and return it at once (status ``starting``): ``.wait()``, ``.cancel()``.

        Unlike a sync call, it goes on if this process stops.
        """
        from lambdaml import predictions

        return predictions.create(self.name, inputs, wait=False)

    def map(self, inputs: Iterable[dict[str, Any]]) -> Iterator[Any]:
        """Run the deployed model on each dict of inputs; yield the outputs in the same order.

        Up to the model's capacity runs at once (``max`` replicas x ``concurrency``). A failed
        prediction raises ``ModelError`` when its turn comes; stopping early (or that error)
        cancels the ones still running.
        """
        from lambdaml import predictions

        return predictions.outputs_in_order(self.name, inputs, self.spec.max * self.spec.concurrency)

    def delete(self) -> None:
        """Remove this model's deployment from the cluster."""
        from lambdaml.deploy import delete

        delete(self.name)


def as_trainer(model: Model, trains: str) -> Model:
    """``model`` (the training function of ``trains``) with a trainer's spec: the same hardware, one at a time, from zero."""
    changes = {"name": trains + TRAINER_SUFFIX, "min": 0, "max": 1, "concurrency": 1, "max_concurrency": None, "batch": None,
               "timeout": None}  # a training takes what it takes: cancel it, or give it a Cancel-After
    model = model.with_spec(build_spec(**{**model.spec.model_dump(), **changes}, _title=f"Invalid trainer of {trains!r}",
                                       _stored=True))
    model.trains = trains
    return model


@overload
def model(target: T, /) -> Model: ...


@overload
def model(
    target: None = None,
    /,
    *,
    name: str | None = None,
    gpu: str | list[str] | None = None,
    cpu: float | None = None,
    memory: str | int | None = None,
    min: int = 0,
    max: int = 1,
    concurrency: int = 1,
    max_concurrency: int | None = None,
    queue: int = 64,
    scaledown_after: float = 60.0,
    timeout: float | None = None,
    packages: list[str] | None = None,
    requirements: str | None = None,
    env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
    output_url: str | None = None,
    batch: int | dict[str, float] | None = None,
    visibility: Literal["private", "public"] = "private",
    train: Callable[..., Any] | None = None,
) -> Callable[[Any], Model]: ...


def model(target: Any = None, /, **params: Any) -> Any:
    """Make a function or class deployable.

    ``@model`` or ``@model(name=..., gpu="A100", cpu=1, memory="8Gi", min=0, max=10,
    concurrency=1, max_concurrency=None, queue=64, scaledown_after=60, timeout=None,
    packages=None, requirements=None, env=None, secrets=None, output_url=None, batch=None,
    visibility="private", train=None)``.

    Without ``packages`` or ``requirements``, the third-party packages the code
    imports are detected and pinned to the versions installed here. ``train``: a function
    whose typed inputs are a training's and which returns the trained weights as a ``Path``;
    deploy runs it as ``{name}-train`` (``Model.trainer``, docs/training.md).
    """

    params = {key: value for key, value in params.items() if value is not None}  # None means "the default"
    train = params.pop("train", None)
    if train is not None and not callable(train):
        raise TypeError(f"@model(train=...) takes the training function, not {train!r}")

    def decorate(obj: Any) -> Model:
        if isinstance(obj, Model):
            obj = obj.target
        if not callable(obj):
            raise TypeError(f"@model decorates a function or a class, not {obj!r}")
        return Model(obj, build_spec(**{"name": kebab_case(obj.__name__), **params}), train)

    return decorate(target) if target is not None else decorate
