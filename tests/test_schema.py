"""The typed signature -> input model, output adapter and OpenAPI document."""

import pytest
from pydantic_core import to_json
from pydantic import BaseModel

from lambdaml import ConfigError, Input, InputError, Secret, model
from lambdaml.inputs import REDACTED


class Caption(BaseModel):
    text: str
    score: float


@model(name="typed")
def typed(
    prompt: str = Input(description="What to write about", min_length=1, max_length=20, regex=r"^[a-z ]+$"),
    steps: int = Input(default=10, ge=1, le=50, description="Sampling steps"),
    style: str = Input(default="plain", choices=["plain", "fancy"], description="Style"),
    api_key: Secret = Input(default=None, description="Service key"),
    ratio: float = 0.5,
) -> list[Caption]:
    return [Caption(text=prompt * 2, score=ratio)]


def test_local_call_resolves_input_defaults():
    result = typed(prompt="cat")
    assert result == [Caption(text="catcat", score=0.5)]


def test_local_call_still_requires_required_inputs():
    with pytest.raises(TypeError, match="prompt"):
        typed()


def test_valid_inputs_get_defaults_and_types():
    inputs = typed.schema.validate({"prompt": "a cat", "steps": "7"})
    assert (inputs.steps, inputs.style, inputs.ratio) == (7, "plain", 0.5)


def test_every_bad_field_is_named_with_its_constraint():
    with pytest.raises(InputError) as error:
        typed.schema.validate({"prompt": "UPPER", "steps": 99, "style": "wild", "bogus": 1})
    fields = {f["field"]: f for f in error.value.invalid_fields}
    assert set(fields) == {"prompt", "steps", "style", "bogus"}
    assert fields["steps"]["constraint"] == {"le": 50}
    assert "pattern" in fields["prompt"]["constraint"]
    assert "'plain' or 'fancy'" in fields["style"]["message"]
    assert "unknown input" in fields["bogus"]["message"]


@pytest.mark.parametrize("value, converted", [("7", 7), (7.0, 7), ("2.5", None), (2.5, None), ("many", None)])
def test_values_are_converted_as_readme_says(value, converted):
    """README: lax conversion, as Cog's (pydantic's default); what cannot be converted is a 422."""
    if converted is None:
        with pytest.raises(InputError, match="steps"):
            typed.schema.validate({"prompt": "a cat", "steps": value})
    else:
        assert typed.schema.validate({"prompt": "a cat", "steps": value}).steps == converted
    with pytest.raises(InputError, match="prompt"):
        typed.schema.validate({"prompt": 3})  # a number is not text


def test_missing_and_wrong_type_inputs():
    with pytest.raises(InputError) as error:
        typed.schema.validate({"steps": "many"})
    fields = {f["field"]: f["type"] for f in error.value.invalid_fields}
    assert fields == {"prompt": "missing", "steps": "int_parsing"}


def test_a_whole_request_body_is_validated_in_one_pass():
    request = typed.schema.validate_request(b'{"input": {"prompt": "a cat", "steps": "7"}, "id": "p1"}')
    assert (request.input.steps, request.input.style, request.id) == (7, "plain", "p1")
    with pytest.raises(InputError) as error:  # the same fields, named the same way, as validate()
        typed.schema.validate_request(b'{"input": {"prompt": "UPPER", "steps": 99}}')
    assert str(error.value).startswith("Invalid input.")
    assert {f["field"] for f in error.value.invalid_fields} == {"prompt", "steps"}


@pytest.mark.parametrize(
    "body, field, message",
    [
        (b'{"prompt": "a cat"}', "prompt", 'inside {"input": {...}}'),  # not the missing input it causes
        (b"{not json", "body", "not valid JSON"),
        (b'{"input": [1]}', "input", "JSON object"),
        (b'{"input": {"prompt": "a"}, "id": "' + b"x" * 200 + b'"}', "id", "1-128"),
    ],
)
def test_problems_with_the_body_itself_are_reported_before_the_inputs(body, field, message):
    with pytest.raises(InputError) as error:
        typed.schema.validate_request(body)
    assert str(error.value).startswith("Invalid request.")
    assert [f["field"] for f in error.value.invalid_fields] == [field]
    assert message in error.value.invalid_fields[0]["message"]


def test_body_and_input_problems_are_both_named_when_the_body_has_an_input():
    with pytest.raises(InputError) as error:
        typed.schema.validate_request(b'{"input": {"steps": 0}, "extra": "x"}')
    assert [f["field"] for f in error.value.invalid_fields] == ["extra", "prompt", "steps"]
    assert "extra: unknown field" in str(error.value) and "steps: Input should be greater than or equal to 1" in str(error.value)


def test_secret_is_redacted_when_echoed_but_usable():
    inputs = typed.schema.validate({"prompt": "a", "api_key": "sk-123"})
    assert isinstance(inputs.api_key, Secret)
    assert inputs.api_key.get_secret_value() == "sk-123"
    assert "Bearer " + inputs.api_key == "Bearer sk-123"
    assert typed.schema.echo(inputs)["api_key"] == REDACTED
    assert "sk-123" not in repr(inputs) and "sk-123" not in f"{inputs.api_key}" and "sk-123" not in str(inputs.api_key)


def test_output_models_are_dumped_as_json():
    assert typed.schema.dump_output([Caption(text="x", score=1)]) == [{"text": "x", "score": 1.0}]


def test_openapi_documents_inputs_constraints_and_output():
    document = typed.openapi()
    schemas = document["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert props["prompt"] == {
        "description": "What to write about",
        "maxLength": 20,
        "minLength": 1,
        "pattern": "^[a-z ]+$",
        "title": "Prompt",
        "type": "string",
        "x-order": 0,
    }
    assert [props[name]["x-order"] for name in props] == list(range(len(props)))  # the form's order, as Cog's
    assert props["steps"]["minimum"] == 1 and props["steps"]["maximum"] == 50 and props["steps"]["default"] == 10
    assert props["style"]["enum"] == ["plain", "fancy"]
    assert props["api_key"]["format"] == "password" and props["api_key"]["writeOnly"] is True
    assert schemas["Input"]["required"] == ["prompt"]
    assert schemas["Output"]["type"] == "array"
    assert schemas["Caption"]["properties"]["score"]["type"] == "number"
    assert set(document["paths"]) == {
        "/predictions", "/predictions/{prediction_id}", "/predictions/{prediction_id}/cancel", "/health-check", "/openapi.json",
    }  # every route server.ModelServer answers
    assert set(document["paths"]["/predictions"]["post"]["responses"]) == {"200", "202", "409", "413", "422", "503"}
    assert document["servers"] == [{"url": "/typed"}]


def test_openapi_request_body_is_what_the_server_accepts():
    request = typed.openapi()["components"]["schemas"]["PredictionRequest"]
    assert request["additionalProperties"] is False  # unknown body fields are a 422
    assert request["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert request["required"] == ["input"]  # typed has a required input: a body without one is refused

    @model
    def defaults_only(steps: int = Input(default=1, description="Steps")) -> int:
        return steps

    relaxed = defaults_only.openapi()["components"]["schemas"]["PredictionRequest"]
    assert "input" not in relaxed.get("required", [])  # an absent input means every default
    assert defaults_only.schema.validate_request(b"{}").input.steps == 1
    assert request["properties"]["id"]["anyOf"][0] == {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}


def test_secret_defaults_never_show_in_the_schema():
    @model
    def keyed(key: Secret = Input(default="default-secret")) -> str:
        return "ok"

    text = str(keyed.openapi())
    assert "default-secret" not in text and REDACTED in text


def test_missing_annotation_is_a_clear_error():
    @model
    def untyped(x) -> int:
        return 1

    with pytest.raises(ConfigError, match="'x'.*no type annotation"):
        untyped.schema


def test_class_needs_a_predict_method():
    @model
    class NoPredict:
        def setup(self):
            pass

    with pytest.raises(ConfigError, match="predict"):
        NoPredict.schema


def test_required_inputs_stay_required_after_shipping_to_a_replica():
    import cloudpickle

    shipped = cloudpickle.loads(cloudpickle.dumps(typed))
    with pytest.raises(InputError, match="prompt: Field required"):
        shipped.schema.validate({})


def test_batched_models_need_list_annotations():
    @model(batch=4)
    def not_lists(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="with batch=..., input 'x' must be list"):
        not_lists.schema


@pytest.mark.parametrize("bad_id", ["../../etc", "", "a" * 129, "a b", "é"])
def test_prediction_ids_are_url_safe(bad_id):
    with pytest.raises(InputError) as error:
        typed.schema.validate_request(to_json({"input": {"prompt": "a cat"}, "id": bad_id}))
    assert [f["field"] for f in error.value.invalid_fields] == ["id"]


def test_webhook_events_filter_names_known_events():
    request = typed.schema.validate_request(
        b'{"input": {"prompt": "a"}, "webhook": "https://example.com/hook", "webhook_events_filter": ["completed"]}'
    )
    assert (request.webhook, request.webhook_events_filter) == ("https://example.com/hook", ["completed"])
    with pytest.raises(InputError) as error:
        typed.schema.validate_request(b'{"input": {"prompt": "a"}, "webhook_events_filter": ["done"]}')
    assert error.value.invalid_fields[0]["field"] == "webhook_events_filter.0"


def test_a_body_nested_too_deeply_is_refused_naming_the_body():
    deep = b'{"input": {"prompt": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    with pytest.raises(InputError) as refused:
        typed.schema.validate_request(deep)
    assert refused.value.invalid_fields[0]["field"] == "body" and "nested too deeply" in str(refused.value)
