"""Schema lint and compatibility between two versions' OpenAPI documents (no cluster)."""

from typing import Iterator

from lambdaml import Input, Path, model
from lambdaml._schema_checks import breaking_changes, lint


def _openapi(**inputs):
    """The OpenAPI document of a model whose predict takes ``inputs`` (name -> (type, Input(...)))."""
    namespace: dict = {"Input": Input, "Path": Path}
    params = ", ".join(f"{name}: {kind.__name__} = Input(**spec_{name})" for name, (kind, _) in inputs.items())
    namespace.update({f"spec_{name}": spec for name, (_, spec) in inputs.items()})
    namespace.update({kind.__name__: kind for kind, _ in inputs.values()})
    exec(f"def predict({params}) -> str:\n    return ''", namespace)
    return model(name="m")(namespace["predict"]).openapi()


def test_lint_names_inputs_without_description_and_defaults_their_constraints_refuse():
    good = _openapi(n=(int, {"default": 2, "ge": 1, "le": 5, "description": "How many"}))
    assert lint(good) == []
    problems = lint(_openapi(n=(int, {"default": 9, "le": 5, "description": "How many"}), prompt=(str, {})))
    assert any(p.startswith("n: its default 9 breaks its own constraints") for p in problems), problems
    assert "prompt: has no description (Input(description=...))" in problems


def test_breaking_changes_are_each_named():
    live = _openapi(
        prompt=(str, {"description": "p"}), steps=(int, {"default": 10, "ge": 1, "le": 50, "description": "s"}),
        mode=(str, {"default": "a", "choices": ["a", "b"], "description": "m"}), seed=(int, {"default": 0, "description": "x"}),
    )
    assert breaking_changes(live, live) == []
    new = _openapi(
        prompt=(str, {"description": "p"}), steps=(int, {"default": 10, "ge": 1, "le": 20, "description": "s"}),
        mode=(str, {"default": "a", "choices": ["a"], "description": "m"}), strength=(float, {"description": "new"}),
    )
    assert breaking_changes(live, new) == [
        "steps: maximum narrowed from 50 to 20",
        "mode: choices removed: 'b'",
        "seed: removed",
        "strength: a new required input without a default",
    ]
    wider = _openapi(
        prompt=(str, {"description": "p"}), steps=(int, {"default": 10, "ge": 1, "le": 100, "description": "s"}),
        mode=(str, {"default": "a", "choices": ["a", "b", "c"], "description": "m"}), seed=(int, {"default": 0, "description": "x"}),
        extra=(str, {"default": "", "description": "optional"}),
    )
    assert breaking_changes(live, wider) == []  # wider ranges, more choices, new optional inputs break nobody


def test_a_changed_input_or_output_type_is_breaking():
    @model(name="m")
    def counts(n: int = Input(description="n")) -> Iterator[int]:
        yield n

    @model(name="m")
    def text(n: str = Input(description="n")) -> str:
        return n

    changes = breaking_changes(counts.openapi(), text.openapi())
    assert changes[0].startswith("n: type changed from") and changes[1].startswith("output: type changed from")
