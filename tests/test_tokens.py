"""The ``api_tokens`` table against a real SQLite file and a real PostgreSQL server (no cluster)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lambdaml.control.records import Records
from lambdaml.control.tables import tokens as tokens_table
from lambdaml.control.tokens import TOUCH_EVERY_S, Tokens, token_hash
from lambdaml.errors import LambdamlError


@pytest.fixture
def store(database):
    records = Records(database)
    yield Tokens(records), records
    records.close()


def test_a_token_is_shown_once_and_stored_only_as_its_hash(store):
    tokens, records = store
    row, token = tokens.create("ci", "predict")
    assert token.startswith("lml_") and len(token) >= 4 + 43  # 32 random bytes, URL-safe base64
    assert set(row) == {"id", "name", "role", "created_at", "last_used_at", "revoked_at"}
    with records.reader.connect() as connection:
        stored = connection.execute(sa.select(tokens_table)).mappings().one()
    assert token not in str(dict(stored)) and stored["hash"] == token_hash(token)
    assert tokens.list() == [row]


def test_the_state_requires_a_token_once_one_is_active(store):
    tokens, _ = store
    assert tokens.state(required=False).required is False
    assert tokens.state(required=True).required is True  # LAMBDAML_AUTH=required with no token yet
    row, token = tokens.create("", "admin")
    state = tokens.state(required=False)
    assert state.required and state.tokens == {token_hash(token): (row["id"], "admin")}
    revoked = tokens.revoke(row["id"])
    assert revoked["revoked_at"] is not None and tokens.revoke("no-such-id") is None
    assert tokens.state(required=False) == type(state)(required=False, tokens={})
    assert tokens.revoke(row["id"])["revoked_at"] == revoked["revoked_at"]  # revoking twice changes nothing
    assert [listed["id"] for listed in tokens.list()] == [row["id"]]  # the revoked one stays listed


def test_an_unknown_role_is_refused(store):
    tokens, _ = store
    with pytest.raises(LambdamlError, match="'predict' or 'admin', not 'root'"):
        tokens.create("x", "root")


def test_last_used_is_written_at_most_every_few_seconds(store):
    tokens, _ = store
    row, _ = tokens.create("busy", "predict")
    assert tokens.due({row["id"]}) == [row["id"]]
    tokens.touch({row["id"]})
    first = tokens.list()[0]["last_used_at"]
    assert first is not None and tokens.due({row["id"]}) == []
    tokens.touch({row["id"]})  # within TOUCH_EVERY_S: no write
    assert tokens.list()[0]["last_used_at"] == first and TOUCH_EVERY_S >= 1
