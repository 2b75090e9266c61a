"""The schema checks of ``lambdaml check``: lint one version's inputs, and compare two versions' schemas.

Both read only the OpenAPI documents (``components.schemas.Input`` and ``Output``), as
cog-safe-push does with Cog's: no model code runs. Each finding is a sentence that names
the input, for the report table of ``lambdaml.checks``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

_TYPE_KEYS = ("type", "format", "items", "anyOf", "$ref", "x-lambdaml-file", "x-cog-array-type")


def inputs_of(openapi: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The input properties of a model's OpenAPI document, and which are required."""
    schema = openapi.get("components", {}).get("schemas", {}).get("Input", {})
    return schema.get("properties", {}), set(schema.get("required", []))


def output_of(openapi: dict[str, Any]) -> dict[str, Any]:
    return openapi.get("components", {}).get("schemas", {}).get("Output", {})


def lint(openapi: dict[str, Any]) -> list[str]:
    """What is wrong with one version's inputs: no description, a default its own constraints
    refuse, an empty list of choices."""
    problems = []
    properties, _ = inputs_of(openapi)
    for name, schema in properties.items():
        if not str(schema.get("description", "")).strip():
            problems.append(f"{name}: has no description (Input(description=...))")
        if _choices(schema) == []:
            problems.append(f"{name}: its choices are empty")
        if "default" in schema and schema["default"] is not None:
            checked = {key: value for key, value in schema.items() if key not in ("default", "title", "description")}
            try:
                jsonschema.validate(schema["default"], checked)
            except jsonschema.ValidationError as exc:
                problems.append(f"{name}: its default {schema['default']!r} breaks its own constraints ({exc.message})")
    return problems


def breaking_changes(live: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a caller of the live version would find broken in the new one."""
    old_inputs, _ = inputs_of(live)
    new_inputs, new_required = inputs_of(new)
    changes = []
    for name, old in old_inputs.items():
        if name not in new_inputs:
            changes.append(f"{name}: removed")
            continue
        current = new_inputs[name]
        if _type(old) != _type(current):
            changes.append(f"{name}: type changed from {_type(old)} to {_type(current)}")
        changes += [f"{name}: {change}" for change in _narrowed(old, current)]
    for name in sorted(new_required - set(old_inputs)):
        if "default" not in new_inputs[name]:
            changes.append(f"{name}: a new required input without a default")
    if _type(output_of(live)) != _type(output_of(new)):
        changes.append(f"output: type changed from {_type(output_of(live))} to {_type(output_of(new))}")
    return changes


def _type(schema: dict[str, Any]) -> str:
    return json.dumps({key: schema[key] for key in _TYPE_KEYS if key in schema}, sort_keys=True)


def _narrowed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    found = []
    for key, tighter in (("minimum", max), ("exclusiveMinimum", max), ("maximum", min), ("exclusiveMaximum", min),
                         ("minLength", max), ("maxLength", min)):
        if key in new and (key not in old or tighter(old[key], new[key]) == new[key] != old.get(key)):
            found.append(f"{key} narrowed from {old.get(key, 'none')} to {new[key]}")
    old_choices, new_choices = _choices(old), _choices(new)
    if new_choices is not None and old_choices is None:
        found.append(f"now limited to the choices {new_choices}")
    elif new_choices is not None and (lost := [choice for choice in old_choices or [] if choice not in new_choices]):
        found.append(f"choices removed: {', '.join(map(repr, lost))}")
    return found


def _choices(schema: dict[str, Any]) -> list[Any] | None:
    """An input's choices: pydantic writes one choice as ``const``."""
    if "enum" in schema:
        return schema["enum"]
    return [schema["const"]] if "const" in schema else None
