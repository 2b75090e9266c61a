"""The models catalog (``models``, ``model_versions``) against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import pytest

from lambdaml.control.catalog import Catalog
from lambdaml.control.records import Records

DOCUMENT = {"openapi": "3.1.0", "components": {"schemas": {"Output": {"type": "string"}}}}


@pytest.fixture
def catalog(database):
    records = Records(database)
    yield Catalog(records)
    records.close()


def test_a_deploy_registers_the_version_it_runs(catalog):
    catalog.register("hello", "aaa", "2026-12-01T10:00:00.000000+00:00", "private", DOCUMENT)
    catalog.register("hello", "bbb", "2026-12-02T10:00:00.000000+00:00", "public", None)
    (model,) = catalog.models()
    assert (model["name"], model["version"], model["visibility"], model["run_count"]) == ("hello", "bbb", "public", 0)
    assert [row["version"] for row in catalog.versions("hello")] == ["bbb", "aaa"]  # newest first
    assert catalog.versions("hello", "aaa")[0]["openapi"] == DOCUMENT and catalog.versions("hello", "zzz") == []
    catalog.register("hello", "aaa", "", "private", DOCUMENT)  # a rollback moves the pointer back
    assert catalog.models("hello")[0]["version"] == "aaa" and len(catalog.versions("hello")) == 2


def test_a_deleted_model_leaves_the_list_and_comes_back_when_deployed(catalog):
    catalog.register("hello", "aaa", "2026-12-01T10:00:00.000000+00:00", "private", DOCUMENT)
    catalog.register("other", "ccc", "2026-12-01T10:00:00.000000+00:00", "private", DOCUMENT)
    catalog.forget("hello")
    assert [model["name"] for model in catalog.models()] == ["other"] and catalog.models("hello") == []
    assert catalog.versions("hello")  # its versions stay, as its records do
    catalog.register("hello", "aaa", "", "private", None)
    assert catalog.models("hello")[0]["deleted_at"] is None
    assert catalog.versions("hello", "aaa")[0]["openapi"] == DOCUMENT  # an old document is not erased
