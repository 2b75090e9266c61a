"""Who is calling: the check every request of a model replica and of ``/v1`` passes first.

The control application reads the active tokens from the database and
publishes them (``AuthState``: whether a token is required, the tokens'
SHA-256 hashes) in Ray's key-value store; every process that answers requests
keeps a copy and refreshes it every ``REFRESH_S`` in the background
(``AuthWatcher``). A request so costs one SHA-256 and a dict lookup, never a
database or control-application call, and a revoked token stops working within
about a second. The state is hashes only: the tokens themselves are nowhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response

from lambdaml._http import error_response
from lambdaml.control.tokens import AuthState, token_hash
from lambdaml.errors import ClusterError

REFRESH_S = 0.5
_KV_KEY = "api_auth"
FIRST_WAIT_S = 10.0  # a request before the first state waits this long for it, then gets a 503
logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Caller:
    """The token a request came with (id and role), or an anonymous caller (both None)."""

    token_id: str | None = None
    role: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def owns(self, token_id: str | None) -> bool:
        """May this caller read or cancel a prediction created with ``token_id``?"""
        return self.admin or (self.token_id is not None and self.token_id == token_id)


ANONYMOUS = Caller()
OPEN = Caller(role="admin")  # no token required: every caller may do everything, as before tokens


def presented_token(authorization: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` (or Replicate's older ``Token <token>``) header."""
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    return token.strip() or None if scheme.lower() in ("bearer", "token") else None


def unauthorized() -> Response:
    """The one answer to a missing or wrong token, whatever was asked for (it says nothing of what exists)."""
    return error_response(
        401, "Unauthenticated",
        "This API needs a token: send `Authorization: Bearer <token>`. `lambdaml tokens create` makes one.",
        {"WWW-Authenticate": "Bearer"},
    )


def forbidden(what: str) -> Response:
    return error_response(403, "Forbidden", f"{what} needs a token with the admin role.")


def publish(state: AuthState) -> None:
    """Make ``state`` the one every replica checks against (the control application calls this)."""
    from lambdaml.cluster.ray_internals import kv_put

    kv_put(_KV_KEY, json.dumps({"required": state.required, "tokens": state.tokens}))


def published() -> AuthState:
    """The state the control application published; ``ClusterError`` before it has."""
    from lambdaml.cluster.ray_internals import kv_get

    raw = kv_get(_KV_KEY)
    if raw is None:
        raise ClusterError("The control application has not published the API tokens yet.")
    data = json.loads(raw)
    return AuthState(required=data["required"], tokens={hash_: tuple(known) for hash_, known in data["tokens"].items()})


async def read_published() -> AuthState:
    return await asyncio.to_thread(published)


def published_watcher() -> AuthWatcher:
    """A model replica's watcher, with the state as published now (so its first request waits for nothing)."""
    try:
        state = published()
    except ClusterError:
        state = None
    return AuthWatcher(read_published, state)


class AuthWatcher:
    """The current ``AuthState`` of the cluster, refreshed in the background by ``fetch``.

    The last state fetched stays in force while the control application cannot be reached:
    tokens are made and revoked through it, so none can change meanwhile.
    """

    def __init__(self, fetch: Callable[[], Awaitable[AuthState]], state: AuthState | None = None) -> None:
        self._fetch = fetch
        self._state = state
        self._task: asyncio.Task | None = None
        self._first = asyncio.Event()

    async def check(self, authorization: bytes | None, public: bool = False) -> Caller | Response:
        """The caller of a request (``public``: of a model anyone may call), or the answer that refuses it."""
        if self._task is None:
            self.start()
        state = self._state or await self._first_state()
        if state is None:
            return error_response(
                503, "Cannot check tokens", "The cluster's control application does not answer yet; try again.",
                {"Retry-After": "1"},
            )
        if not state.required:
            return OPEN
        token = presented_token(authorization)
        if token is not None and (known := state.tokens.get(token_hash(token))) is not None:
            return Caller(*known)
        return ANONYMOUS if public and token is None else unauthorized()

    async def state(self) -> AuthState:
        """The current state, waiting for the first; ``ClusterError`` if none could be had."""
        state = self._state or await self._first_state()
        if state is None:
            raise ClusterError("The API tokens could not be read yet; try again.")
        return state

    async def refresh(self) -> None:
        """Fetch now (after a token was made or revoked here)."""
        self._state = await self._fetch()
        self._first.set()

    def start(self) -> None:
        """Begin fetching (on the running loop), so the first request finds the state ready."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _first_state(self) -> AuthState | None:
        self.start()
        try:
            await asyncio.wait_for(self._first.wait(), FIRST_WAIT_S)
        except asyncio.TimeoutError:
            pass
        return self._state

    async def _refresh_forever(self) -> None:
        warned = 0.0
        while True:
            try:
                self._state = await self._fetch()
                self._first.set()
            except Exception as exc:  # the control application is (re)starting: the last state holds
                if time.monotonic() - warned > 60:
                    warned = time.monotonic()
                    logger.warning(f"lambdaml: cannot read the API tokens from the control application yet: {exc}")
            await asyncio.sleep(REFRESH_S)


class UrlKeys:
    """Keys that make a URL a capability: readable without a token, unguessable.

    The JavaScript client reads a ``/v1`` prediction's ``urls.stream`` without its token, as
    Replicate's stream URLs are capabilities; so ``/v1`` shows that URL with ``?key=``, an
    HMAC of the prediction id under a secret kept in the records database, and the stream
    route takes either. A file uploaded to ``/v1/files`` reaches a replica the same way
    (``lambdaml.control.files``): the key signs ``file:{id}``, which no prediction id can be.
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def sign(self, subject: str) -> str:
        return hmac.new(self._secret, subject.encode(), hashlib.sha256).hexdigest()[:32]

    def valid(self, subject: str, key: str | None) -> bool:
        return bool(key) and hmac.compare_digest(self.sign(subject), key)
