"""@model parameters: parsing, defaults and the errors raised at decoration time."""

import pytest

from lambdaml import ConfigError, model
from lambdaml._resources import GpuRequest, parse_gpu, parse_memory
from lambdaml.spec import build_spec, kebab_case


def test_gpu_strings_parse_to_type_and_count():
    assert parse_gpu("A100") == GpuRequest("A100", 1)
    assert parse_gpu("h100:2") == GpuRequest("H100", 2)
    assert parse_gpu("A100-80GB").accelerator_type == "A100-80G"
    assert parse_gpu("A100-40GB:4") == GpuRequest("A100-40GB", 4)


@pytest.mark.parametrize("bad", ["A1000", ""])
def test_unknown_gpu_names_list_the_accepted_values(bad):
    with pytest.raises(ValueError, match="T4, L4, A10G, A100"):
        parse_gpu(bad)


@pytest.mark.parametrize("bad", ["H100:0", "H100:two", "T4:"])
def test_bad_gpu_counts_are_refused(bad):
    with pytest.raises(ValueError, match="count"):
        parse_gpu(bad)


def test_gpu_list_is_kept_in_preference_order():
    @model(gpu=["H100", "A100:2"])
    def f(x: int) -> int:
        return x

    assert f.spec.gpu == (GpuRequest("H100"), GpuRequest("A100", 2))


def test_unknown_gpu_fails_at_decoration_naming_parameter_and_choices():
    with pytest.raises(ConfigError) as error:

        @model(gpu="A1000")
        def f(x: int) -> int:
            return x

    assert "gpu" in str(error.value) and "H100" in str(error.value) and "A1000" in str(error.value)


@pytest.mark.parametrize(
    "params, words",
    [
        ({"min": 3, "max": 2}, ["min", "max"]),
        ({"min": -1}, ["min", "greater than or equal to 0"]),
        ({"cpu": -0.5}, ["cpu", "greater than 0"]),
        ({"memory": "lots"}, ["memory", "8Gi"]),
        ({"timeout": 0}, ["timeout"]),
        ({"concurrency": 4, "max_concurrency": 2}, ["max_concurrency"]),
        ({"name": "Not OK!"}, ["name", "lowercase"]),
        ({"scaledown_after": -3}, ["scaledown_after"]),
        ({"name": "ui"}, ["name", "taken by lambdaml's own routes"]),  # the web page's route
        ({"name": "v1"}, ["name", "taken by lambdaml's own routes"]),
    ],
)
def test_invalid_parameters_raise_clear_config_errors(params, words):
    with pytest.raises(ConfigError) as error:
        model(**params)(lambda x: x)
    for word in words:
        assert word in str(error.value)


def test_memory_units():
    assert parse_memory("8Gi") == 8 * 1024**3
    assert parse_memory("512Mi") == 512 * 1024**2
    assert parse_memory("2G") == 2 * 1000**3
    assert parse_memory(1024) == 1024


def test_name_defaults_to_kebab_case_of_the_object():
    assert kebab_case("EchoClass") == "echo-class"
    assert kebab_case("make_thumbnail") == "make-thumbnail"

    @model
    class ImageCaptioner:
        def predict(self, x: int) -> int:
            return x

    assert ImageCaptioner.name == "image-captioner"


def test_batch_accepts_a_size_a_pair_or_a_mapping():
    from lambdaml.spec import build_spec

    assert build_spec(name="b", batch=8).batch.model_dump() == {"max_size": 8, "wait_ms": 10.0}
    assert build_spec(name="b", batch=(4, 25)).batch.model_dump() == {"max_size": 4, "wait_ms": 25.0}
    assert build_spec(name="b", batch={"max_size": 2}).batch.max_size == 2
    with pytest.raises(ConfigError, match="batch"):
        build_spec(name="b", batch=0)


def test_deploy_settings_are_checked_as_model_checks_them():
    spec = build_spec(name="m", gpu="A100", max=3, env={"MODE": "fast"})
    moved = spec.with_settings({"gpu": ["H100", "A100"], "min": 1})
    assert [gpu.type for gpu in moved.gpu] == ["H100", "A100"] and moved.min == 1 and moved.max == 3
    assert moved.env == spec.env and spec.with_settings({}) is spec
    with pytest.raises(ConfigError, match=r"Invalid deploy settings:\n  model: min \(5\) is larger than max \(3\)"):
        spec.with_settings({"min": 5})
    with pytest.raises(ConfigError, match="env cannot be changed at deploy time"):
        spec.with_settings({"env": {}})
    bare = moved.without_settings()  # what the packaged code carries
    assert bare.settings() == build_spec(name="m").settings() and bare.env == spec.env
