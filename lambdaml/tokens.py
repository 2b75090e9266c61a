"""API tokens, from Python and the CLI: ``lambdaml.tokens.create()``, ``.list()``, ``.revoke(id)``.

Once a token exists (or the control application runs with ``LAMBDAML_AUTH=required``),
every request to a model or to ``/v1`` needs ``Authorization: Bearer <token>``;
``GET /{name}/health-check`` stays open, and a model deployed with
``visibility="public"`` may be run without one. These calls go through Ray, not
HTTP: whoever can reach the cluster through Ray administers it already, so making
the first token needs none.
"""

from __future__ import annotations

from typing import Any

from lambdaml import cluster
from lambdaml._settings import CONTROL_APP
from lambdaml.control.tokens import ROLES
from lambdaml.errors import LambdamlError

_TIMEOUT_S = 30.0


def create(name: str = "", role: str = "predict") -> tuple[dict[str, Any], str]:
    """Make a token: ``(its description, the token)``. The token is shown only now; keep it.

    ``role``: ``predict`` (run models, read and cancel the predictions it created) or
    ``admin`` (everything, including every prediction and the webhook secret).
    """
    if role not in ROLES:
        raise LambdamlError(f"A token's role is 'predict' or 'admin', not {role!r}.")
    return cluster.call_app(CONTROL_APP, "create_token", name, role, timeout_s=_TIMEOUT_S)


def list() -> list[dict[str, Any]]:  # noqa: A001 - lambdaml.tokens.list(), as lambdaml.predictions.list()
    """Every token made on this cluster (id, name, role, created, last used, revoked), never the tokens."""
    return cluster.call_app(CONTROL_APP, "list_tokens", timeout_s=_TIMEOUT_S)


def revoke(token_id: str, open_api: bool = False) -> dict[str, Any]:
    """Revoke a token by id; requests with it are refused within a second.

    Revoking the last active token would open the API to anyone who can reach it (unless
    ``LAMBDAML_AUTH=required``), so that needs ``open_api=True``.
    """
    tokens = list()
    known = next((token for token in tokens if token["id"] == token_id), None)
    if known is None:
        raise LambdamlError(f"No token with id {token_id!r}. `lambdaml tokens ls` lists them.")
    active = [token["id"] for token in tokens if token["revoked_at"] is None]
    if active == [token_id] and not open_api and not cluster.call_app(CONTROL_APP, "auth_required"):
        raise LambdamlError(
            f"{token_id} is the last active token: revoking it opens the API to anyone who can reach it. "
            "Create another first, set LAMBDAML_AUTH=required on the cluster, or pass --open-api to do it anyway."
        )
    return cluster.call_app(CONTROL_APP, "revoke_token", token_id, timeout_s=_TIMEOUT_S)
