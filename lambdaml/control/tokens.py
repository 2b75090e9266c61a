"""API tokens: made once, stored as hashes beside the records, revoked by id.

A token is ``lml_`` and 32 random bytes (URL-safe base64); only its SHA-256 is
stored, which is enough for random tokens (no salt or slow hash: nothing to
guess). Callers send it as ``Authorization: Bearer <token>``; the check runs
on every request against a snapshot of the active tokens (``AuthState``) that
each replica refreshes from the control application (``lambdaml.control.auth``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lambdaml import _clock
from lambdaml.control.records import Records
from lambdaml.control.tables import tokens
from lambdaml.errors import LambdamlError

ROLES = ("predict", "admin")
PREFIX = "lml_"
TOUCH_EVERY_S = 10.0  # "last used" is written at most this often per token: reads stay off the write lock


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AuthState:
    """What a replica needs to check a caller: whether a token is required, and the active tokens' hashes."""

    required: bool
    tokens: dict[str, tuple[str, str]]  # SHA-256 of the token -> (token id, role)


class Tokens:
    """The ``api_tokens`` table of a records database."""

    def __init__(self, records: Records) -> None:
        self._records = records
        self._touched: dict[str, float] = {}

    def create(self, name: str, role: str) -> tuple[dict[str, Any], str]:
        """A new token: its row (never the token) and the token itself, which is not kept."""
        if role not in ROLES:
            raise LambdamlError(f"A token's role is 'predict' or 'admin', not {role!r}.")
        token = new_token()
        row = {"id": secrets.token_hex(6), "name": name or "", "role": role, "hash": token_hash(token),
               "created_at": _clock.now(), "last_used_ts": None, "revoked_at": None}
        with self._records.write() as connection:
            connection.execute(sa.insert(tokens).values(**row))
        return _public(row), token

    def list(self) -> list[dict[str, Any]]:
        """Every token ever made, oldest first, revoked ones included (their ids stay in the records)."""
        with self._records.reader.connect() as connection:
            rows = connection.execute(sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id)).mappings().all()
        return [_public(dict(row)) for row in rows]

    def revoke(self, token_id: str) -> dict[str, Any] | None:
        """Revoke a token (at once for new requests: replicas refresh their snapshot twice a second); None if unknown."""
        where = tokens.c.id == token_id
        with self._records.write() as connection:
            connection.execute(sa.update(tokens).where(where, tokens.c.revoked_at.is_(None)).values(revoked_at=_clock.now()))
            row = connection.execute(sa.select(tokens).where(where)).mappings().first()
        return None if row is None else _public(dict(row))

    def state(self, required: bool) -> AuthState:
        """The active tokens; a token is required once one exists (``required``: always)."""
        query = sa.select(tokens.c.hash, tokens.c.id, tokens.c.role).where(tokens.c.revoked_at.is_(None))
        with self._records.reader.connect() as connection:
            active = {hash_: (token_id, role) for hash_, token_id, role in connection.execute(query)}
        return AuthState(required=required or bool(active), tokens=active)

    def due(self, token_ids: set[str]) -> list[str]:
        """Those of ``token_ids`` whose "last used" was not written in the last ``TOUCH_EVERY_S``."""
        now = time.time()
        return [token_id for token_id in token_ids if now - self._touched.get(token_id, 0.0) >= TOUCH_EVERY_S]

    def touch(self, token_ids: set[str]) -> None:
        """Note that these tokens were used now (at most every ``TOUCH_EVERY_S`` per token)."""
        now, due = time.time(), self.due(token_ids)
        if not due:
            return
        self._touched.update(dict.fromkeys(due, now))
        with self._records.write() as connection:
            connection.execute(sa.update(tokens).where(tokens.c.id.in_(due)).values(last_used_ts=now))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    last_used = row["last_used_ts"]
    return {
        "id": row["id"], "name": row["name"], "role": row["role"], "created_at": row["created_at"],
        "last_used_at": _clock.at(last_used) if last_used else None, "revoked_at": row["revoked_at"],
    }
