"""A Cog predictor's schema and validation in lambdaml, against what Cog's own package says of it.

Cog 0.23's Python package reads a predictor with ``cog._inspector.create_predictor`` and gives
each input's and the output's JSON schema (``FieldType.json_type``, ``OutputType.json_type``);
its CLI puts those in the document with the ``InputField``'s constraints. The test builds that
from the cog package and compares it with the document lambdaml serves. (Cog's document puts
``choices`` in a component of their own, referenced through ``allOf``; lambdaml writes the
``enum`` inline, as pydantic does: the same values.)
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import textwrap

import pytest

from lambdaml import cog
from lambdaml.errors import InputError

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples" / "cog"
EVERY_KIND = textwrap.dedent(
    """
    from typing import List, Optional

    from cog import BaseModel, BasePredictor, Input, Path, Secret


    class Result(BaseModel):
        label: str
        score: float
        mask: Optional[Path]


    class Predictor(BasePredictor):
        def predict(
            self,
            prompt: str = Input(description="Text", min_length=2, max_length=50, regex="^[a-z ]+$"),
            steps: int = Input(description="Steps", ge=1, le=50, default=10),
            scale: float = Input(default=7.5, ge=0.0),
            size: int = Input(choices=[256, 512], default=512),
            style: str = Input(choices=["plain", "fancy"], default="plain"),
            tags: List[str] = Input(description="Tags", default=None),
            image: Path = Input(description="An image"),
            masks: Optional[List[Path]] = Input(default=None),
            token: Secret = Input(description="API token"),
            seed: Optional[int] = Input(description="Random seed", default=None, deprecated=True),
            fast: bool = True,
        ) -> Result:
            return Result(label=prompt, score=scale, mask=None)
    """
)


def cog_document_parts(root: pathlib.Path, ref: str) -> tuple[dict, list[str], dict]:
    """(Input properties, required, Output) for ``root/ref`` as Cog's package describes them."""
    from cog import _inspector

    module_name, name = ref.removesuffix(".py").replace(".py:", ":").replace("/", ".").split(":")
    sys.path.insert(0, str(root))
    try:
        info = _inspector.create_predictor(module_name, name)
    finally:
        sys.path.remove(str(root))
        for loaded in [m for m, mod in sys.modules.items() if str(getattr(mod, "__file__", "")).startswith(str(root))]:
            del sys.modules[loaded]
    properties, required = {}, []
    for field in sorted(info.inputs.values(), key=lambda f: f.order):
        prop = {"title": field.name.replace("_", " ").title(), "x-order": field.order, **field.type.json_type()}
        for key, value in [("description", field.description), ("minimum", field.ge), ("maximum", field.le),
                           ("minLength", field.min_length), ("maxLength", field.max_length), ("pattern", field.regex),
                           ("enum", field.choices), ("deprecated", field.deprecated)]:
            if value is not None:
                prop[key] = value
        if field.default is not None:
            prop["default"] = field.type.json_encode(field.default)
        prop.pop("nullable", None)  # lambdaml says it with anyOf [..., null]
        properties[field.name] = prop
        if field.default is None and field.type.repetition.name not in ("OPTIONAL", "OPTIONAL_REPEATED"):
            required.append(field.name)
    return properties, required, info.output.json_type()


def _without_null(prop: dict) -> dict:
    """``anyOf: [X, null]`` as X, with the property's own keys: how Cog writes an Optional input."""
    options = [option for option in prop.get("anyOf", []) if option != {"type": "null"}]
    if len(options) != 1:
        return prop
    rest = {key: value for key, value in prop.items() if key != "anyOf"}
    if rest.get("default", 0) is None:
        del rest["default"]  # Cog writes no default for an optional input without one
    return {**options[0], **rest}


@pytest.mark.parametrize("project", ["every-kind", "chat", "tuned"])
def test_the_document_says_what_cog_says(project, tmp_path):
    if project == "every-kind":
        root = tmp_path / project
        root.mkdir()
        (root / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
        (root / "predict.py").write_text(EVERY_KIND)
    else:
        root = EXAMPLES / project
    ref = cog.project.read(root).predict
    properties, required, output = cog_document_parts(root, str(ref))
    schemas = cog.load(root).openapi()["components"]["schemas"]
    ours = {name: _without_null(prop) for name, prop in schemas["Input"]["properties"].items()}
    for prop in ours.values():
        prop.pop("x-lambdaml-file", None), prop.pop("x-lambdaml-secret", None)  # lambdaml's own markers
        if prop.get("type") == "array":
            prop["items"].pop("x-lambdaml-file", None)
    assert list(ours) == list(properties)
    for name, expected in properties.items():
        assert {key: ours[name].get(key) for key in expected} == expected, name
    assert schemas["Input"].get("required", []) == required
    assert schemas["Output"] == output  # Cog's own output schema, x-cog-array-type included


def test_cog_inputs_are_validated_as_lambdaml_inputs(tmp_path):
    root = tmp_path / "validated"
    root.mkdir()
    (root / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    (root / "predict.py").write_text(EVERY_KIND)
    model = cog.load(root)
    good = {"prompt": "a cat", "image": "https://example.com/a.png", "token": "sk-1", "tags": ["x"]}
    inputs = model.schema.validate(good)
    assert inputs.steps == 10 and inputs.size == 512 and inputs.masks is None and inputs.seed is None
    assert model.schema.echo(inputs)["token"] == "**********"
    with pytest.raises(InputError) as refused:
        model.schema.validate({**good, "steps": 99, "size": 300, "prompt": "A!", "extra": 1})
    fields = {field["field"] for field in refused.value.invalid_fields}
    assert fields == {"steps", "size", "prompt", "extra"}
    with pytest.raises(InputError, match="image: Field required"):
        model.schema.validate({"prompt": "a cat", "token": "x", "tags": []})
    with pytest.raises(InputError, match="tags: Field required"):  # Cog's rule: a list without a default is required
        model.schema.validate({"prompt": "a cat", "token": "x", "image": "https://example.com/a.png"})


def test_the_runner_hands_cog_types_to_the_predictor(tmp_path):
    """The generated class, run here as a replica would: Cog's Path and Secret in, a BaseModel out as a dict."""
    root = tmp_path / "typed"
    root.mkdir()
    (root / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    (root / "predict.py").write_text(textwrap.dedent(
        """
        import cog
        from cog import BaseModel, BasePredictor, Path, Secret

        class Out(BaseModel):
            kinds: str
            where: Path

        class Predictor(BasePredictor):
            def setup(self):
                self.cwd = Path.cwd()

            def predict(self, image: Path, token: Secret) -> Out:
                assert isinstance(image, cog.Path) and isinstance(token, cog.Secret)
                return Out(kinds=f"{image.read_text()} {token.get_secret_value()}", where=self.cwd / "predict.py")
        """
    ))
    model = cog.load(root)
    import pickle

    restored = pickle.loads(pickle.dumps(model.with_spec(model.spec)))  # as the artifact carries it
    instance = restored.target()
    previous = pathlib.Path.cwd()
    try:
        instance.setup()
        (tmp_path / "in.txt").write_text("png")
        inputs = restored.schema.validate({"image": "https://example.com/x.png", "token": "sk-9"})
        values = dict(inputs)
        values["image"] = tmp_path / "in.txt"  # what the replica's file fetch leaves
        output = instance.predict(**values)
    finally:
        importlib.invalidate_caches()
        import os

        os.chdir(previous)
    assert output["kinds"] == "png sk-9"
    assert output["where"].read_text().startswith("\nimport cog")  # the project's files, unpacked
