"""Which file URLs a request may hand to a replica, and which hosts it may reach.

A prediction request is untrusted input. Its file URLs must not make the
replica read its own disk (``file://``, bare paths) or reach services that are
only visible from inside the cluster (loopback, private networks, the cloud
metadata endpoint at 169.254.169.254), unless the operator allow-lists them
with ``LAMBDAML_ALLOWED_HOSTS``. ``s3://`` and ``gs://`` go through the
operator's own configured stores and are not subject to the host check.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

SCHEMES = ("s3", "gs", "http", "https", "data")


class RefusedURL(ValueError):
    """A URL the replica will not fetch; the message says why, for the 422."""


def check_syntax(url: str) -> str:
    """The URL's scheme, if it is one lambdaml fetches; RefusedURL otherwise."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "file" or not scheme or "/" in scheme or len(scheme) == 1:  # len 1: a Windows drive letter
        raise RefusedURL(
            f"{url[:200]!r} is a local path; send the file itself (a data: URI) or a URL "
            f"({', '.join(s + ':' for s in SCHEMES)})"
        )
    if scheme not in SCHEMES:
        raise RefusedURL(f"the {scheme}: scheme is not supported; use one of {', '.join(s + ':' for s in SCHEMES)}")
    if scheme in ("s3", "gs", "http", "https"):
        parts = urlsplit(url)
        if not parts.netloc or (scheme in ("s3", "gs") and not parts.path.strip("/")):
            raise RefusedURL(f"{url[:200]!r} is not a complete URL (expected {scheme}://host-or-bucket/path)")
    return scheme


def allowed_hosts() -> set[str]:
    """``LAMBDAML_ALLOWED_HOSTS``: comma-separated ``host`` or ``host:port`` entries."""
    return {entry.strip().lower() for entry in os.environ.get("LAMBDAML_ALLOWED_HOSTS", "").split(",") if entry.strip()}


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified
    )


def check_host(url: str) -> None:
    """RefusedURL if an http(s) URL points at an internal address that is not allow-listed."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = allowed_hosts()
    if host in allowed or f"{host}:{port}" in allowed:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError):
        raise RefusedURL(f"cannot resolve the host of {url[:200]!r}") from None
    internal = sorted(a for a in addresses if _is_internal(a))
    if internal:
        raise RefusedURL(
            f"{host} resolves to an internal address ({internal[0]}), which requests may not reach; "
            "an operator can allow it with LAMBDAML_ALLOWED_HOSTS"
        )
