"""The files stage, public side: ``Path`` for file inputs and outputs, and ``cached`` for weights.

In a request, a ``Path`` input is a URL (``s3://``, ``gs://``, ``http(s)://`` or
``data:``); inside ``predict`` it is a local ``pathlib.Path``, and a ``Path`` that
``predict`` returns goes back as a URL. Describing a model needs only this module: the
transfers themselves are ``lambdaml.serve.transfer`` (in the replica) and
``lambdaml._staging`` (the client sending local files).
"""

from __future__ import annotations

import pathlib
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from lambdaml._urls import RefusedURL, check_syntax
from lambdaml._weights import cached

__all__ = ["Path", "cached"]


class FileRef(str):
    """A validated file URL, not fetched yet (what a ``Path`` input holds between validation and predict)."""


class Path(pathlib.PosixPath):
    """A file: a URL in requests and responses, a local ``pathlib.Path`` inside ``predict``."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_ref,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uri", "x-lambdaml-file": True}


def _validate_ref(value: Any) -> FileRef | Path:
    if isinstance(value, pathlib.PurePath):  # a file object in Python code (an output, a driver on the cluster)
        return Path(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a file URL (s3://, gs://, https://, data:), got {type(value).__name__}")
    url = value
    try:
        check_syntax(url)
    except RefusedURL as exc:
        raise ValueError(str(exc)) from None
    return FileRef(url)


def file_fields(input_schema: dict[str, Any]) -> set[str]:
    """Names of the inputs that take files, from a model's input JSON schema."""

    def takes_files(schema: dict[str, Any]) -> bool:
        if schema.get("x-lambdaml-file"):
            return True
        nested = [schema["items"]] if "items" in schema else []
        nested += schema.get("anyOf", []) + schema.get("allOf", [])
        return any(isinstance(s, dict) and takes_files(s) for s in nested)

    return {name for name, schema in input_schema.get("properties", {}).items() if takes_files(schema)}
