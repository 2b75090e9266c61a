"""lambdaml.run / create_prediction / Model.remote: outputs and the errors they raise."""

import pytest

import lambdaml
from lambdaml import InputError, ModelError, NotDeployedError, model


@model(name="picky", cpu=0.1, min=1, max=1)
def picky(n: int) -> int:
    if n < 0:
        raise ValueError("n must not be negative")
    return n + 1


@pytest.fixture(scope="module")
def picky_deployed(cluster):
    picky.deploy()
    yield
    picky.delete()


def test_run_returns_the_output(picky_deployed):
    assert lambdaml.run("picky", {"n": 1}) == 2
    prediction = lambdaml.create_prediction("picky", {"n": 2})
    assert prediction["status"] == "succeeded" and prediction["output"] == 3


def test_model_failure_raises_model_error_with_the_prediction(picky_deployed):
    with pytest.raises(ModelError, match="must not be negative") as error:
        lambdaml.run("picky", {"n": -1})
    assert error.value.prediction.status == "failed" and error.value.prediction.id
    with pytest.raises(ModelError, match="must not be negative"):
        picky.remote(n=-1)


def test_invalid_input_raises_input_error_naming_the_field(picky_deployed):
    with pytest.raises(InputError) as error:
        lambdaml.run("picky", {"n": "x"})
    assert error.value.invalid_fields[0]["field"] == "n"
    with pytest.raises(InputError, match="n: Field required"):
        picky.remote()


def test_unknown_model_is_a_clear_error(cluster):
    with pytest.raises(NotDeployedError, match="No model named 'ghost'"):
        lambdaml.run("ghost", {})

    @model(name="ghost")
    def ghost() -> int:
        return 0

    with pytest.raises(NotDeployedError, match="ghost"):
        ghost.remote()


def test_remote_works_where_an_event_loop_is_running(deployed):
    """As in a Jupyter kernel, whose main thread runs an asyncio loop."""
    import asyncio

    from lambdaml import model

    @model(name="in-loop", cpu=0.1, min=1)
    def in_loop(x: int) -> int:
        return x + 1

    deployed(in_loop)

    async def inside_a_loop() -> int:
        return in_loop.remote(x=1)

    assert asyncio.run(inside_a_loop()) == 2


def test_predictions_create_returns_a_prediction_object(deployed):
    @model(name="objects", cpu=0.1, min=1)
    def objects(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    deployed(objects)
    prediction = lambdaml.predictions.create("objects", {"x": 4})
    assert (prediction.status, prediction.output, prediction.error) == ("succeeded", 8, None)
    assert prediction.id and "predict_time" in prediction.metrics and prediction.logs == ""
    failed = lambdaml.predictions.create("objects", {"x": -1})
    assert failed.status == "failed" and failed.error == "negative"
