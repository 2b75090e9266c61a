"""What the CLI reads and writes: model files, ``-i key=value`` inputs, output files.

Kept apart from ``lambdaml.cli`` so the command definitions stay a thin,
readable layer over the public API.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import mimetypes
import os
import pathlib
import re
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
import httpx

from lambdaml._urls import safe_file_name
from lambdaml.errors import ConfigError, InputError, code_error
from lambdaml.model import Model


def load_models(target: str) -> list[Model]:
    """The ``@model`` objects defined in ``path/to/file.py``, or the one named by ``file.py:object``."""
    path_text, _, attribute = target.partition(":")
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise ConfigError(f"No file at {path}. Give the Python file that defines your model, e.g. models/hello.py")
    module_name = re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} is not a Python file")
    sys.path.insert(0, str(path.parent.resolve()))  # so the file's own helper modules import
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # SyntaxError included: the user's file, not lambdaml, is at fault
        raise code_error(exc, path) from exc
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Model):
            raise ConfigError(f"{path} has no @model called {attribute!r}")
        return [found]
    models = [v for v in vars(module).values() if isinstance(v, Model) and v.target.__module__ == module_name]
    if not models:
        raise ConfigError(f"{path} defines no @model. Decorate a function or class with @lambdaml.model")
    return models


# ------------------------------------------------------------------ -i inputs


def _types(schema: dict[str, Any]) -> list[str]:
    if "type" in schema:
        return [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
    if "enum" in schema:
        return sorted({type(v).__name__.replace("str", "string").replace("int", "integer") for v in schema["enum"]})
    return [t for option in schema.get("anyOf", []) for t in _types(option)]


def _convert(key: str, text: str, schema: dict[str, Any]) -> Any:
    if text.startswith("@"):
        path = pathlib.Path(text[1:]).expanduser()
        if not path.is_file():
            raise InputError(f"Input {key}: no file at {path}")
        return path
    types = _types(schema)
    try:
        if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if "number" in types and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            return float(text)
        if "boolean" in types and text.lower() in ("true", "false", "1", "0", "yes", "no"):
            return text.lower() in ("true", "1", "yes")
        if ("array" in types or "object" in types) and text[:1] in "[{":
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"Input {key}: {text!r} is not valid JSON ({exc})") from None
    return text


def parse_inputs(pairs: list[str], input_schema: dict[str, Any]) -> dict[str, Any]:
    """``["steps=4", "image=@photo.png"]`` -> ``{"steps": 4, "image": Path("photo.png")}``, typed by the schema.

    A key given more than once makes a list (``-i images=@a.png -i images=@b.png``).
    """
    properties = input_schema.get("properties", {})
    values: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise InputError(f"-i expects key=value (or key=@file), got {pair!r}")
        schema = properties.get(key, {})
        item_schema = schema.get("items", {}) if "array" in _types(schema) and text[:1] != "[" else schema
        value = _convert(key, text, item_schema)
        if key in values and schema and "array" not in _types(schema):
            raise InputError(f"Input {key} was given twice (-i {key}=...); it takes one value")
        if key in values or item_schema is not schema:
            existing = values.get(key, [])
            values[key] = (existing if isinstance(existing, list) else [existing]) + [value]
        else:
            values[key] = value
    return values


# ------------------------------------------------------------------ output files


def _is_file_url(value: str) -> bool:
    return value.startswith("data:") or value.split("://", 1)[0] in ("s3", "gs", "http", "https")


def _unused(folder: pathlib.Path, name: str) -> pathlib.Path:
    """``folder/name``, or ``name-1.ext``, ``name-2.ext``... if that exists: a file already there is kept."""
    stem, suffix = os.path.splitext(name)
    target, number = folder / name, 1
    while target.exists():
        target, number = folder / f"{stem}-{number}{suffix}", number + 1
    return target


def _save(url: str, folder: pathlib.Path, index: int) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        mime = header[5:].split(";")[0]
        content = base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode()
        target = _unused(folder, f"output{'' if index == 0 else f'-{index}'}{mimetypes.guess_extension(mime) or ''}")
        target.write_bytes(content)
        return target
    # The server names the file: decoded first, then cut to a plain name, so ..%2F cannot leave the folder.
    target = _unused(folder, safe_file_name(unquote(urlsplit(url).path), f"output-{index}"))
    if url.startswith(("http://", "https://")):
        with httpx.stream("GET", url, timeout=300, follow_redirects=True) as response, open(target, "wb") as file:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                file.write(chunk)
    else:
        fs, path = fsspec.core.url_to_fs(url)
        fs.get_file(path, str(target))
    return target


def save_output_files(output: Any, folder: pathlib.Path) -> tuple[Any, list[pathlib.Path]]:
    """Download every file URL in ``output`` into ``folder``; returns the output with local paths, and the paths."""
    saved: list[pathlib.Path] = []

    def visit(value: Any) -> Any:
        if isinstance(value, str) and _is_file_url(value):
            saved.append(_save(value, folder, len(saved)))
            return str(saved[-1])
        if isinstance(value, list):
            return [visit(v) for v in value]
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        return value

    return visit(output), saved
