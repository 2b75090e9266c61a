"""Packaging: artifacts hold the code, never secret values; big captures warn."""

import os
import subprocess
import sys

import pytest

from lambdaml import ConfigError, model
from lambdaml.package import LargeArtifactWarning, build, unpack


def test_build_pickles_the_model_and_pins_its_environment():
    @model(name="packed", env={"MODE": "fast"}, secrets=["PACKED_TOKEN"])
    def packed(x: int) -> int:
        import httpx  # noqa: F401

        return x + 1

    manifest, code = build(packed, {"PACKED_TOKEN": "s3cr3t-value"})
    assert unpack(code)(x=1) == 2
    assert manifest.spec["env"] == {"MODE": "fast"} and manifest.spec["secrets"] == ["PACKED_TOKEN"]
    assert any(r.startswith("httpx==") for r in manifest.requirements)
    assert b"s3cr3t-value" not in code and "s3cr3t-value" not in manifest.model_dump_json()


def test_a_secret_value_captured_by_the_code_is_refused():
    token = "captured-s3cr3t"

    @model(name="leaky", secrets=["LEAKY_TOKEN"])
    def leaky() -> str:
        return token

    with pytest.raises(ConfigError, match=r"holds the value of secret LEAKY_TOKEN.*os.environ\['LEAKY_TOKEN'\]"):
        build(leaky, {"LEAKY_TOKEN": token})


def test_large_captured_objects_warn():
    blob = b"x" * (11 * 1024 * 1024)

    @model(name="heavy")
    def heavy() -> int:
        return len(blob)

    with pytest.warns(LargeArtifactWarning, match="weights URL"):
        build(heavy, {})


def test_postponed_annotations_survive_shipping_by_value(tmp_path, monkeypatch):
    """Under `from __future__ import annotations`, names used only in annotations are not in the shipped globals."""
    (tmp_path / "lmt_postponed.py").write_text(
        "from __future__ import annotations\n"
        "from lambdaml import Path as FilePath, model\n\n"
        "@model(name='postponed')\n"
        "def size_of(data: FilePath, scale: float = 1.0) -> int:\n"
        "    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import lmt_postponed

    _, code = build(lmt_postponed.size_of, {})
    sys.modules.pop("lmt_postponed")  # the replica has no such module
    shipped = unpack(code)
    assert shipped.schema.file_fields == {"data"}
    assert shipped.schema.validate({"data": "s3://b/k", "scale": "2"}).scale == 2.0


def test_the_version_of_unchanged_code_is_the_same_in_every_process(tmp_path):
    source = tmp_path / "versioned_model.py"
    source.write_text(
        "from lambdaml import Input, model\n\n"
        "@model(name='same', gpu=['A100', 'L4'], batch={'max_size': 4}, env={'A': '1'})\n"
        "class Same:\n"
        "    def predict(self, text: list[str] = Input(description='Text')) -> list[str]:\n"
        "        return text\n"
    )
    script = (
        "import runpy, sys; from lambdaml.package import build; from lambdaml.artifacts import content_version\n"
        f"model = runpy.run_path({str(source)!r}, run_name='not_main')['Same']\n"
        "print(content_version(*build(model, {})))\n"
    )
    versions = {
        subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(versions) == 1, versions
