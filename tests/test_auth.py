"""API tokens on the session's cluster: 401s, roles, public models, revocation, the audit trail.

The cluster is open when this module starts and open again when it ends: the fixture
revokes every token it made (the API needs a token only while one is active).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import lambdaml
from lambdaml import model, tokens
from lambdaml.control.auth import presented_token
from tests.conftest import tokens_on, wait_until as _wait_until


@model(name="guarded", cpu=0.1, min=1)
def guarded(text: str = "hi") -> str:
    return text.upper()


@model(name="open-door", cpu=0.1, min=1, visibility="public")
def open_door(text: str = "hi") -> str:
    return text[::-1]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def locked(cluster):
    """Both models deployed, then an admin and a predict token made; afterwards every token revoked."""
    for target in (guarded, open_door):
        target.deploy()
    with tokens_on(cluster.http_url, "/guarded/predictions") as (admin, user):
        yield cluster.http_url, admin, user
    for target in (guarded, open_door):
        target.delete()


def test_the_authorization_header_forms():
    assert presented_token(b"Bearer lml_abc") == "lml_abc"
    assert presented_token(b"Token lml_abc") == "lml_abc"  # older Replicate clients
    assert presented_token(b"bearer  lml_abc ") == "lml_abc"
    assert presented_token(b"Basic dXNlcjpwYXNz") is None
    assert presented_token(b"Bearer") is None and presented_token(None) is None


def test_a_missing_or_wrong_token_is_one_401(locked):
    base, (admin_row, admin_token), _ = locked
    answers = [
        httpx.post(f"{base}/guarded/predictions", json={"input": {}}),
        httpx.post(f"{base}/guarded/predictions", json={"input": {}}, headers=_bearer("lml_not-a-token")),
        httpx.get(f"{base}/guarded/openapi.json"),
        httpx.get(f"{base}/guarded/no-such-route", headers=_bearer("lml_not-a-token")),
        httpx.get(f"{base}/v1/predictions"),
        httpx.get(f"{base}/v1/predictions/whatever", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    ]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == answers[0].json()  # the same whatever was asked for
    assert answers[0].json()["title"] == "Unauthenticated" and "Authorization: Bearer" in answers[0].json()["detail"]
    assert httpx.get(f"{base}/guarded/health-check").status_code == 200  # load balancers need no token
    ran = httpx.post(f"{base}/guarded/predictions", json={"input": {"text": "ok"}}, headers={"Authorization": f"Token {admin_token}"})
    assert ran.status_code == 200 and ran.json()["output"] == "OK"


def test_a_public_model_runs_without_a_token_but_its_records_need_one(locked):
    base, (_, admin_token), _ = locked
    ran = httpx.post(f"{base}/open-door/predictions", json={"input": {"text": "abc"}})
    assert ran.status_code == 200 and ran.json()["output"] == "cba"
    assert httpx.get(f"{base}/open-door/openapi.json").status_code == 200
    assert httpx.post(f"{base}/open-door/predictions", json={"input": {}}, headers=_bearer("lml_wrong")).status_code == 401
    record_url = ran.json()["urls"]["get"]
    assert httpx.get(record_url).status_code == 401
    _wait_until(lambda: httpx.get(record_url, headers=_bearer(admin_token)).status_code == 200, "the record never arrived")


def test_a_predict_token_sees_only_its_own_predictions(locked):
    base, (admin_row, admin_token), (user_row, user_token) = locked
    mine = httpx.post(f"{base}/guarded/predictions", json={"input": {"text": "mine"}}, headers=_bearer(user_token)).json()
    theirs = httpx.post(f"{base}/guarded/predictions", json={"input": {"text": "theirs"}}, headers=_bearer(admin_token)).json()
    _wait_until(lambda: httpx.get(f"{base}/v1/predictions/{theirs['id']}", headers=_bearer(admin_token)).status_code == 200,
                "the records never arrived")
    user_get = httpx.get(f"{base}/v1/predictions/{mine['id']}", headers=_bearer(user_token))
    assert user_get.status_code == 200 and "token" not in str(user_get.json().keys())
    for url in (f"{base}/v1/predictions/{theirs['id']}", f"{base}/v1/predictions/{theirs['id']}/stream"):
        assert httpx.get(url, headers=_bearer(user_token)).status_code == 404  # another's is as good as absent
    assert httpx.post(f"{base}/v1/predictions/{theirs['id']}/cancel", headers=_bearer(user_token)).status_code == 404
    assert httpx.post(f"{base}/guarded/predictions/{theirs['id']}/cancel", headers=_bearer(user_token)).status_code == 404
    listed = httpx.get(f"{base}/v1/predictions", params={"model": "guarded"}, headers=_bearer(user_token)).json()["results"]
    assert mine["id"] in [r["id"] for r in listed] and theirs["id"] not in [r["id"] for r in listed]
    secret = httpx.get(f"{base}/v1/webhooks/default/secret", headers=_bearer(user_token))
    assert secret.status_code == 403 and "admin" in secret.json()["detail"]
    assert httpx.get(f"{base}/v1/webhooks/default/secret", headers=_bearer(admin_token)).json()["key"].startswith("whsec_")
    # The audit trail: an admin lists what one token created.
    audited = httpx.get(f"{base}/v1/predictions", params={"token": user_row["id"]}, headers=_bearer(admin_token)).json()
    assert [r["id"] for r in audited["results"]] == [mine["id"]]


def test_the_python_client_sends_lambdaml_api_token(locked, monkeypatch):
    _, (admin_row, admin_token), (user_row, user_token) = locked
    monkeypatch.delenv("LAMBDAML_API_TOKEN", raising=False)
    with pytest.raises(lambdaml.AuthError, match="needs a token.*LAMBDAML_API_TOKEN"):
        lambdaml.run("guarded", {"text": "x"})
    monkeypatch.setenv("LAMBDAML_API_TOKEN", "lml_revoked-or-never-made")
    with pytest.raises(lambdaml.AuthError, match="refused the token in LAMBDAML_API_TOKEN"):
        lambdaml.run("guarded", {"text": "x"})
    monkeypatch.setenv("LAMBDAML_API_TOKEN", user_token)
    assert lambdaml.run("guarded", {"text": "client"}) == "CLIENT"
    created = lambdaml.predictions.create("guarded", {"text": "audit"}, wait=True)
    _wait_until(lambda: created.id in [p.id for p in lambdaml.predictions.list("guarded")],
                "the prediction's record never appeared in the token's own list")  # written just after the answer
    with pytest.raises(lambdaml.AuthError, match="admin"):
        lambdaml.predictions.webhook_secret()
    monkeypatch.setenv("LAMBDAML_API_TOKEN", admin_token)
    assert [p.id for p in lambdaml.predictions.list(token=user_row["id"])][0] == created.id
    used = {row["id"]: row for row in tokens.list()}[user_row["id"]]
    assert used["last_used_at"] is not None and "hash" not in used


def test_a_revoked_token_is_refused_within_a_second_or_so(locked):
    base, (_, admin_token), _ = locked
    row, token = tokens.create("short-lived", role="predict")
    _wait_until(lambda: httpx.post(f"{base}/guarded/predictions", json={"input": {}}, headers=_bearer(token)).status_code == 200,
                "the new token was never accepted")
    tokens.revoke(row["id"])
    took = _wait_until(
        lambda: httpx.post(f"{base}/guarded/predictions", json={"input": {}}, headers=_bearer(token)).status_code == 401,
        "the revoked token still works", limit_s=5.0,
    )
    print(f"revoked token refused by the model's replica after {took:.2f} s")
    assert httpx.get(f"{base}/v1/predictions", headers=_bearer(token)).status_code == 401
    with pytest.raises(lambdaml.LambdamlError, match="No token with id"):
        tokens.revoke("nope")
    with pytest.raises(lambdaml.LambdamlError, match="role is 'predict' or 'admin'"):
        tokens.create("bad", role="root")


def test_the_last_token_is_not_revoked_without_saying_so(locked):
    _, (admin_row, _), (user_row, _) = locked
    tokens.revoke(user_row["id"])
    with pytest.raises(lambdaml.LambdamlError, match="last active token.*--open-api"):
        tokens.revoke(admin_row["id"])
    assert {row["id"]: row for row in tokens.list()}[admin_row["id"]]["revoked_at"] is None


def test_tokens_appear_in_no_log_and_no_record(locked, cluster):
    base, (_, admin_token), _ = locked
    httpx.post(f"{base}/guarded/predictions", json={"input": {"text": "log me"}}, headers=_bearer(admin_token))
    httpx.post(f"{base}/guarded/predictions", json={"input": {"text": "x"}}, headers=_bearer(admin_token + "x"))
    time.sleep(1.5)  # replicas write their log files every second
    database = Path(os.environ["LAMBDAML_DATABASE_URL"].removeprefix("sqlite:///"))
    secret = admin_token.removeprefix("lml_").encode()
    places = [database, *database.parent.glob(database.name + "-wal")]
    places += [path for path in Path(os.environ["LAMBDAML_TEMP_DIR"]).rglob("*.log") if path.is_file()]
    leaked = [str(path) for path in places if secret in path.read_bytes()]
    assert not leaked


def test_the_tokens_cli(locked):
    made = subprocess.run([sys.executable, "-m", "lambdaml.cli", "tokens", "create", "--name", "from-cli"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("lml_") and "shown only now" in made.stderr
    listed = subprocess.run([sys.executable, "-m", "lambdaml.cli", "tokens", "ls"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "from-cli" in listed.stdout and token not in listed.stdout
    token_id = {row["name"]: row["id"] for row in tokens.list()}["from-cli"]
    revoked = subprocess.run([sys.executable, "-m", "lambdaml.cli", "tokens", "revoke", token_id],
                             capture_output=True, text=True, timeout=120)
    assert revoked.returncode == 0 and f"Token {token_id} revoked" in revoked.stdout
