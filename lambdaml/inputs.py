"""Input declarations: ``Input(...)`` defaults and the ``Secret`` type.

``Input`` only records what the author wrote; ``lambdaml.schema`` turns it into
a pydantic field when the model is described.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

REDACTED = "**********"


class _Required:
    """Marker for an Input with no default (the caller must give it)."""

    def __repr__(self) -> str:
        return "<required>"

    def __reduce__(self) -> str:
        return "REQUIRED"  # unpickles as the module's singleton, so `is REQUIRED` holds in replicas


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Input:
    """Describe one input of ``predict``: its default, description and constraints.

    ``ge``/``le`` bound numbers, ``min_length``/``max_length`` bound strings and
    lists, ``regex`` must match a string, ``choices`` lists the allowed values, ``deprecated``
    marks an input that is going away.
    """

    default: Any = REQUIRED
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: Sequence[Any] | None = None
    deprecated: bool | None = None  # shown in the schema (as Cog's Input does); the input still works

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class Secret(str):
    """A string input whose value never shows: not in repr, logs, schemas or echoed inputs.

    It behaves as the string it holds (concatenate it, pass it to a client);
    printing or formatting it shows ``**********``. Use ``get_secret_value()``
    where an API insists on a plain ``str``.
    """

    def get_secret_value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, format_spec: str) -> str:
        return format(REDACTED, format_spec)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _: REDACTED),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        # x-cog-secret: how Cog's schemas (and Replicate's clients) mark a secret
        json_schema.update({"format": "password", "writeOnly": True, "x-lambdaml-secret": True, "x-cog-secret": True})
        return json_schema
