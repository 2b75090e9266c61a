"""The describe stage: walk ``predict``'s typed signature once, as FastAPI does.

From the annotations and ``Input(...)`` defaults we build a pydantic model for
the inputs and a ``TypeAdapter`` for the output. Validation, the OpenAPI
document and secret redaction all come from these two objects, so they can
never disagree.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import pathlib
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator
from pydantic_core import from_json

from lambdaml.errors import ConfigError, InputError
from lambdaml.files import Path, file_fields
from lambdaml.inputs import Input, Secret

PREDICTION_ID = r"^[A-Za-z0-9_-]{1,128}$"  # ids become URL path segments and storage keys
ID_RULE = "a prediction id is 1-128 characters: letters, digits, _ and -"
WebhookEvent = Literal["start", "output", "logs", "completed"]


class Prediction(BaseModel):
    """One prediction, with Replicate's field names: what the API returns and webhooks send.

    The fields after ``completed_at`` came with the stored records (``GET /v1/predictions/{id}``);
    they have defaults so older answers still validate. ``input`` and ``logs`` are None once the
    retention period removed the data (``data_removed``). ``wait``, ``reload`` and ``cancel``
    talk to the API (``lambdaml.predictions``); the object is updated in place.
    """

    id: str
    status: Literal["starting", "processing", "succeeded", "failed", "canceled"]
    input: dict[str, Any] | None = {}
    output: Any = None
    error: str | None = None
    logs: str | None = ""
    metrics: dict[str, Any] = {}  # times in seconds; a Cog model's own metrics may be counts or lists
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    model: str | None = None
    version: str | None = None
    urls: dict[str, str] = {}
    deadline: str | None = None
    data_removed: bool = False
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _lambdaml_name(cls, value: Any) -> Any:
        """``lambdaml/hello``, as /v1 shows it (Replicate's owner/name), is the model ``hello``."""
        return value.removeprefix("lambdaml/") if isinstance(value, str) else value

    def wait(self, timeout: float | None = None) -> Prediction:
        """Poll until the prediction ends (succeeded, failed or canceled) and return it.

        After ``timeout`` seconds, ``WaitTimeoutError``; the prediction goes on.
        """
        from lambdaml.predictions import watch

        for _ in watch(self, timeout):
            pass
        return self

    def reload(self) -> Prediction:
        """Fetch the record again (``GET urls.get``) and return this object, updated."""
        from lambdaml.predictions import reload

        return reload(self)

    def cancel(self) -> Prediction:
        """Ask for the prediction to stop (``POST urls.cancel``); it turns ``canceled`` shortly after."""
        from lambdaml.predictions import cancel

        return self._take(cancel(self.id, self.urls.get("cancel")))

    def _take(self, other: Prediction) -> Prediction:
        """Take every field of ``other``, a newer copy of the same record; returns self."""
        for field in type(self).model_fields:
            setattr(self, field, getattr(other, field))
        return self


@dataclass(frozen=True)
class ModelSchema:
    """The typed interface of one model: how to validate inputs and dump outputs."""

    input_model: type[BaseModel]
    output_adapter: TypeAdapter
    secret_fields: frozenset[str]
    file_fields: frozenset[str] = frozenset()  # inputs that take files (fetched before predict)
    streaming: bool = False  # predict is a generator: output_adapter describes one item
    # A Cog model (lambdaml.cog): Cog's JSON schema of its output, and Cog's answers (a stream's items
    # stay a list; a 422 names fields as Cog does). None for lambdaml's own models.
    cog_output: dict[str, Any] | None = None

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        """Validated inputs, or an InputError naming every bad field and its constraint."""
        try:
            return self.input_model.model_validate(raw)
        except ValidationError as exc:
            raise _input_error(exc.errors(include_input=False, include_url=False)) from None

    @functools.cached_property
    def request_model(self) -> type[BaseModel]:
        """A whole ``POST /predictions`` body, inputs included: one validation pass per request."""
        return create_model(
            "PredictionRequest",
            __config__=ConfigDict(extra="forbid"),
            # Required where some input is: the schema must refuse what the server refuses (an OpenAPI
            # fuzzer sends a body without it). With only defaults, an absent input means all of them.
            input=(self.input_model, Field() if self._has_required_inputs else Field(default_factory=dict, validate_default=True)),
            id=(str | None, Field(default=None, pattern=PREDICTION_ID, description="Your id for the prediction "
                                  "(1-128 letters, digits, _ and -); random if absent")),
            webhook=(str | None, Field(
                default=None, description="A URL to POST the prediction to as it changes (public hosts only)",
                json_schema_extra={"format": "uri", "pattern": "^https?://"},  # checked by the server, with the host
            )),
            webhook_events_filter=(
                list[WebhookEvent] | None,
                Field(default=None, description="Which events reach the webhook; all four by default"),
            ),
        )

    @property
    def _has_required_inputs(self) -> bool:
        return any(field.is_required() for field in self.input_model.model_fields.values())

    # The three calls below are on every request's path: they call pydantic-core's validator and
    # serializers directly, as BaseModel's and TypeAdapter's methods do after passing a dozen
    # keyword arguments each (a measurable share of a request's own cost, bench/README.md).

    def validate_request(self, body: bytes) -> BaseModel:
        """The validated request (``.input``, ``.id``, ``.webhook``...), or an InputError naming every bad field."""
        try:
            return self.request_model.__pydantic_validator__.validate_json(body or b"{}")
        except ValidationError as exc:
            raise _request_error(exc.errors(include_input=False, include_url=False), _sent_input(body)) from None

    def echo(self, inputs: BaseModel) -> dict[str, Any]:
        """The inputs as JSON, with secrets replaced by ``**********``."""
        return inputs.__pydantic_serializer__.to_python(inputs, mode="json")

    def dump_output(self, output: Any) -> Any:
        """The output as JSON-ready data (pydantic models and containers included)."""
        return self.output_adapter.serializer.to_python(output, mode="json")

    @functools.cached_property
    def streams_text(self) -> bool:
        """A generator of ``str``: its items are tokens of one text, which a plain request gets joined."""
        return self.streaming and self.cog_output is None and self.output_adapter.json_schema().get("type") == "string"

    def output_json_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        """What a plain request's output is: for a generator, its items as a list, or joined if they are text."""
        if self.cog_output is not None:
            return dict(self.cog_output)
        item = self.output_adapter.json_schema(ref_template=ref_template)
        if not self.streaming:
            return item
        if self.streams_text:
            return {**item, "x-lambdaml-stream": True}  # Cog's ConcatenateIterator, always concatenated
        definitions = item.pop("$defs", None)
        wrapped = {"type": "array", "items": item, "x-lambdaml-stream": True}  # Replicate's iterator outputs
        return {**wrapped, "$defs": definitions} if definitions else wrapped

    def json_schema(self) -> dict[str, Any]:
        return {"input": self.input_model.model_json_schema(), "output": self.output_json_schema()}


def _summary(fields: list[dict[str, Any]]) -> str:
    return "; ".join(f"{f['field']}: {f['message']}" for f in fields)


def _input_error(errors: list[dict[str, Any]]) -> InputError:
    fields = [_describe_error(error) for error in errors]
    return InputError(f"Invalid input. {_summary(fields)}", fields)


def _sent_input(body: bytes) -> bool:
    """Whether ``body`` has an ``input`` object (asked only on the error path: it parses the body again)."""
    try:
        # pydantic's parser, not json.loads: its depth limit is a ValueError, json's a RecursionError
        return isinstance(from_json(body or b"{}").get("input"), dict)
    except (ValueError, AttributeError):  # not JSON (or nested too deeply), or not a JSON object
        return False


def _request_error(errors: list[dict[str, Any]], sent_input: bool) -> InputError:
    """Problems with the body itself first, then with the inputs.

    Without an ``input`` object in the body, the inputs' errors are only the
    consequence of the body's (e.g. inputs sent outside ``input`` are all
    "missing"), so they are left out.
    """
    body, inputs = [], []
    for error in errors:
        if len(error["loc"]) > 1 and error["loc"][0] == "input":
            inputs.append({**error, "loc": error["loc"][1:]})
        else:
            body.append(error)
    if not body:
        return _input_error(inputs)
    if any(error["type"] == "extra_forbidden" for error in body):  # inputs sent outside "input": say that once
        body = [error for error in body if error["loc"] != ("input",)]
    fields = [_describe_body_error(error) for error in body]
    if sent_input:
        fields += [_describe_error(error) for error in inputs]
    return InputError(f"Invalid request. {_summary(fields)}", fields)


def _describe_body_error(error: dict[str, Any]) -> dict[str, Any]:
    field, message = ".".join(str(part) for part in error["loc"]) or "body", error["msg"]
    if error["type"] == "extra_forbidden":
        message = 'unknown field; put the model\'s inputs inside {"input": {...}}'
    elif error["type"] == "json_invalid" and "recursion limit" in error["ctx"].get("error", ""):
        field, message = "body", "the request body is nested too deeply (JSON is read up to 200 levels deep)"
    elif error["type"] == "json_invalid":
        field, message = "body", f"the request body is not valid JSON ({error['ctx'].get('error', '')})"
    elif error["type"] == "string_pattern_mismatch" and field == "id":
        message = ID_RULE
    elif error["type"] == "missing" and field == "input":
        message = 'missing: send the model\'s inputs as {"input": {...}}'
    elif error["type"] == "model_type":  # not an object, where one is expected
        message = "Input should be a JSON object"
    return {"field": field, "type": error["type"], "message": message}


def _describe_error(error: dict[str, Any]) -> dict[str, Any]:
    loc = [str(part) for part in error["loc"]]
    described: dict[str, Any] = {
        "field": ".".join(loc) or "input",
        "type": error["type"],
        "message": error["msg"],
    }
    if error["type"] == "extra_forbidden":
        described["message"] = "unknown input; this model does not take it"
    if error.get("ctx"):
        described["constraint"] = {k: v for k, v in error["ctx"].items() if k != "error"}
    return described


def predict_callable(target: Any) -> Callable[..., Any]:
    """The function whose signature defines the model: the function, or ``Class.predict``."""
    if inspect.isclass(target):
        predict = getattr(target, "predict", None)
        if predict is None or not callable(predict):
            raise ConfigError(f"{target.__name__} needs a predict(self, ...) method to be a @model class")
        return predict
    return target


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    for parameter in parameters:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ConfigError(
                f"{function.__qualname__} takes *{parameter.name}; a model's inputs must be "
                "named parameters so they can be validated and documented"
            )
    return parameters


def input_info(parameter: inspect.Parameter) -> Input:
    """The ``Input`` for a parameter, whether written as ``Input(...)``, a plain default or none."""
    if isinstance(parameter.default, Input):
        return parameter.default
    if parameter.default is inspect.Parameter.empty:
        return Input()
    return Input(default=parameter.default)


def type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``function`` (strings under ``from __future__ import annotations`` too)."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # unresolvable forward references, typos in annotations
        hint = ""
        if isinstance(exc, NameError):
            hint = " (names used in annotations must be importable from the module, not only inside a function)"
        raise ConfigError(f"Cannot read the type annotations of {function.__qualname__}: {exc}{hint}") from None


_STREAMS = (
    collections.abc.Iterator, collections.abc.Iterable, collections.abc.Generator,
    collections.abc.AsyncIterator, collections.abc.AsyncIterable, collections.abc.AsyncGenerator,
)


def is_streaming(function: Callable[..., Any]) -> bool:
    """A generator ``predict`` (sync or async) streams its outputs."""
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


def _unwrap(annotation: Any, containers: tuple[Any, ...], what: str, function: Callable[..., Any]) -> Any:
    """``list[X]`` -> ``X`` (or ``Iterator[X]`` -> ``X``): the per-request type behind a batch or a stream."""
    if typing.get_origin(annotation) in containers and typing.get_args(annotation):
        return typing.get_args(annotation)[0]
    if annotation is Any:
        return Any
    raise ConfigError(f"{function.__qualname__}: {what}, got {annotation!r}")


def describe(target: Any, hints: dict[str, Any] | None = None, batched: bool = False) -> ModelSchema:
    """Build the input model and output adapter of a @model function or class (``hints``: resolved already).

    ``batched``: predict takes a list per input and returns a list; the API stays per request.
    """
    function = predict_callable(target)
    hints = hints if hints is not None else type_hints(function)
    streaming = is_streaming(function)
    fields: dict[str, Any] = {}
    secrets = set()
    for order, parameter in enumerate(_parameters(function)):
        if parameter.name not in hints:
            raise ConfigError(
                f"Input {parameter.name!r} of {function.__qualname__} has no type annotation; "
                f"add one, e.g. `{parameter.name}: str`"
            )
        annotation = hints[parameter.name]
        if batched:
            annotation = _unwrap(annotation, (list,), f"with batch=..., input {parameter.name!r} must be list[...]", function)
        info = input_info(parameter)
        if info.choices is not None:
            annotation = Literal[tuple(info.choices)]  # type: ignore[misc]
        if annotation is pathlib.Path:  # the plain type works too
            annotation = Path
        if annotation is Secret:
            secrets.add(parameter.name)
            if isinstance(info.default, str):  # so the schema shows the default redacted
                info = dataclasses.replace(info, default=Secret(info.default))
        field = Field(
            default=... if info.required else info.default,
            description=info.description,
            ge=info.ge,
            le=info.le,
            min_length=info.min_length,
            max_length=info.max_length,
            pattern=info.regex,
            # x-order: the inputs' order, for forms (Cog's and Replicate's schemas carry it)
            json_schema_extra={"x-order": order, **({"deprecated": True} if info.deprecated else {})},
        )
        fields[parameter.name] = (annotation, field)
    title = getattr(target, "__name__", "Model")
    try:
        input_model = create_model(f"{title}Input", __config__=ConfigDict(extra="forbid"), **fields)
        output = hints.get("return", Any)
        if streaming:
            output = _unwrap(output, _STREAMS, "a generator predict must return Iterator[...]", function)
        elif batched:
            output = _unwrap(output, (list,), "with batch=..., predict must return list[...]", function)
        output_adapter = TypeAdapter(Any if output is None else Path if output is pathlib.Path else output)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"The inputs or output of {function.__qualname__} cannot be validated: {exc}") from None
    file_inputs = file_fields(input_model.model_json_schema())
    return ModelSchema(input_model, output_adapter, frozenset(secrets), frozenset(file_inputs), streaming)


def resolve_defaults(function: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a plain local call, with ``Input(default=...)`` replaced by its default."""
    signature = inspect.signature(function)
    bound = signature.bind_partial(*args, **kwargs)
    for parameter in signature.parameters.values():
        if parameter.name not in bound.arguments and isinstance(parameter.default, Input):
            if parameter.default.required:
                raise TypeError(f"{function.__qualname__}() missing required input {parameter.name!r}")
            bound.arguments[parameter.name] = parameter.default.default
    return dict(bound.arguments)
