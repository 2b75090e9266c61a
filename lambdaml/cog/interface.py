"""A Cog predictor's inputs and output, read by Cog's own inspector, as lambdaml annotations.

``cog._inspector.create_predictor`` is what Cog's server uses to read a predictor (which
inputs, their constraints, which of them are required, what the output is). Its answer is
turned into plain data here (``CogInterface``: names, type names, defaults), which travels with
the artifact, and from that data into the ``Input(...)`` parameters and return annotation of a
lambdaml model, so that Cog inputs are validated and documented by the same code as
lambdaml's own.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import WithJsonSchema

from lambdaml.files import Path
from lambdaml.inputs import REQUIRED, Input, Secret

_PRIMITIVES: dict[str, Any] = {
    "BOOL": bool, "FLOAT": float, "INTEGER": int, "STRING": str,
    "PATH": Path, "FILE": Path, "SECRET": Secret, "ANY": Any, "CUSTOM": Any,
}


@dataclass(frozen=True)
class CogType:
    """One input's type as Cog sees it: a primitive, how it repeats, or the variants of a union."""

    primitive: str  # a cog._adt.PrimitiveType name
    repetition: str  # REQUIRED, OPTIONAL, REPEATED, OPTIONAL_REPEATED
    variants: tuple["CogType", ...] = ()

    @classmethod
    def of(cls, field_type: Any) -> "CogType":
        variants = tuple(cls.of(v) for v in field_type.union_variants or ())
        return cls(field_type.primitive.name, field_type.repetition.name, variants)

    @property
    def optional(self) -> bool:
        return self.repetition in ("OPTIONAL", "OPTIONAL_REPEATED")

    def annotation(self) -> Any:
        if self.variants:
            base: Any = typing.Union[tuple(v.annotation() for v in self.variants)]  # noqa: UP007
        else:
            base = _PRIMITIVES[self.primitive]
        if self.repetition in ("REPEATED", "OPTIONAL_REPEATED"):
            base = list[base]
        return base | None if self.optional else base


@dataclass(frozen=True)
class CogInput:
    """One input of ``predict``/``run``, with Cog's constraints."""

    name: str
    type: CogType
    default: Any = None
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: tuple[Any, ...] | None = None
    deprecated: bool | None = None

    @property
    def required(self) -> bool:
        """Cog's rule: an input with no default is required unless its type is Optional."""
        return self.default is None and not self.type.optional

    def parameter(self) -> inspect.Parameter:
        """The keyword parameter a lambdaml predict would declare for this input."""
        ge, le = self.ge, self.le
        if self.type.primitive == "INTEGER":  # Cog keeps bounds as floats; an integer input's are whole numbers
            ge = int(ge) if ge is not None and ge == int(ge) else ge
            le = int(le) if le is not None and le == int(le) else le
        info = Input(
            default=REQUIRED if self.required else self.default,
            description=self.description, ge=ge, le=le, min_length=self.min_length, max_length=self.max_length,
            regex=self.regex, choices=list(self.choices) if self.choices is not None else None,
            deprecated=self.deprecated,
        )
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                 annotation=self.type.annotation())


@dataclass(frozen=True)
class CogInterface:
    """What lambdaml needs to serve a Cog predictor without importing it first."""

    inputs: tuple[CogInput, ...]
    output_schema: dict[str, Any]  # Cog's own JSON schema of the output (OutputType.json_type)
    output_kind: str  # SINGLE, LIST, ITERATOR, CONCAT_ITERATOR, OBJECT
    output_primitive: str | None
    method: str | None  # "predict", "run", "train", or None for a plain function
    is_async: bool
    setup_takes_weights: bool

    @property
    def streaming(self) -> bool:
        return self.output_kind in ("ITERATOR", "CONCAT_ITERATOR")

    def signature(self) -> inspect.Signature:
        """``(self, *, name: type = Input(...), ...) -> output``: the predict lambdaml describes."""
        parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        parameters += [cog_input.parameter() for cog_input in self.inputs]
        return inspect.Signature(parameters, return_annotation=self.return_annotation())

    def return_annotation(self) -> Any:
        """The output's type for lambdaml, documented with the JSON schema Cog gives it."""
        schema = {key: value for key, value in self.output_schema.items() if key not in ("x-cog-array-type", "x-cog-array-display")}
        if self.streaming:  # lambdaml describes one item of a stream
            item = schema.get("items", {})
            return collections.abc.Iterator[Annotated[self._item_type(), WithJsonSchema(item)]]
        if self.output_kind == "OBJECT":  # a cog.BaseModel: the runner hands it over as a dict
            return Annotated[dict[str, Any], WithJsonSchema(schema)]
        single = self._item_type()
        value_type = single if self.output_kind == "SINGLE" else list[single]
        return Annotated[value_type, WithJsonSchema(schema)]

    def _item_type(self) -> Any:
        return _PRIMITIVES.get(self.output_primitive or "ANY", Any)


def read(module_name: str, name: str) -> CogInterface:
    """Ask Cog's inspector about ``module_name.name`` (a class with predict or run, or a function; imported already)."""
    import importlib

    from cog import _inspector

    info = _inspector.create_predictor(module_name, name)
    target = getattr(importlib.import_module(module_name), name)
    method: str | None = None
    function = target
    if inspect.isclass(target):
        method, function = _inspector._selected_predict_method(target, f"{module_name}.{name}")
    setup = getattr(target, "setup", None) if inspect.isclass(target) else None
    inputs = tuple(
        CogInput(
            name=field.name, type=CogType.of(field.type), default=field.default, description=field.description,
            ge=field.ge, le=field.le, min_length=field.min_length, max_length=field.max_length, regex=field.regex,
            choices=tuple(field.choices) if field.choices is not None else None, deprecated=field.deprecated,
        )
        for field in sorted(info.inputs.values(), key=lambda f: f.order)
    )
    return CogInterface(
        inputs=inputs,
        output_schema=info.output.json_type(),
        output_kind=info.output.kind.name,
        output_primitive=info.output.type.name if info.output.type is not None else None,
        method=method,
        is_async=inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function),
        setup_takes_weights=setup is not None and "weights" in inspect.signature(setup).parameters,
    )
