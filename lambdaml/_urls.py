"""Which file URLs a request may hand to a replica, and which hosts it may reach.

A prediction request is untrusted input. Its file URLs must not make the
replica read its own disk (``file://``, bare paths) or reach services that are
only visible from inside the cluster (loopback, private networks, the cloud
metadata endpoint at 169.254.169.254), unless the operator allow-lists them
with ``LAMBDAML_ALLOWED_HOSTS``. ``s3://`` and ``gs://`` inputs are read with
the deployer's credentials, which may reach far more than a caller should
(other models' artifacts, say), so only the locations the operator lists in
``LAMBDAML_INPUT_BUCKETS`` and the model's own output location may be read.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("s3", "gs", "http", "https", "data")
FILE_REFERENCE = "lambdaml-file"  # a file uploaded to /v1/files, signed by the control app (lambdaml.control.files)


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
    if scheme == FILE_REFERENCE:  # not offered to callers: /v1 writes these, and only a signed one reads a file
        return scheme
    if scheme not in SCHEMES:
        raise RefusedURL(f"the {scheme}: scheme is not supported; use one of {', '.join(s + ':' for s in SCHEMES)}")
    if scheme in ("s3", "gs", "http", "https"):
        parts = urlsplit(url)
        if not parts.netloc or (scheme in ("s3", "gs") and not parts.path.strip("/")):
            raise RefusedURL(f"{url[:200]!r} is not a complete URL (expected {scheme}://host-or-bucket/path)")
    return scheme


def safe_file_name(name: str, fallback: str) -> str:
    """A file name from a URL's last part, decoded, that cannot leave its folder: no ``/`` or ``\\``
    (``..%2F`` decodes to one), no leading dot, only letters, digits, ``.``, ``_`` and ``-``."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", last).lstrip(".") or fallback


def allowed_hosts() -> set[str]:
    """``LAMBDAML_ALLOWED_HOSTS``: comma-separated ``host`` or ``host:port`` entries."""
    return {entry.strip().lower() for entry in os.environ.get("LAMBDAML_ALLOWED_HOSTS", "").split(",") if entry.strip()}


def _is_internal(address: str) -> bool:
    """Anything not globally routable: loopback, private, link-local, carrier-grade NAT (100.64.0.0/10,
    where one cloud's metadata service is), documentation and benchmark ranges, multicast..."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_host(url: str) -> str:
    """The address to connect to for an http(s) URL; RefusedURL if it is internal and not allow-listed.

    Connect to this address rather than looking the host up again (``pinned``): a name whose
    answers change between two lookups (DNS rebinding) cannot pass the check with a public
    address and then be reached at an internal one.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = host in allowed_hosts() or f"{host}:{port}" in allowed_hosts()
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]
    except (socket.gaierror, UnicodeError):
        if allowed:  # the operator vouches for it; it may resolve where and when it is used
            return host
        raise RefusedURL(f"cannot resolve the host of {url[:200]!r}") from None
    if allowed:
        return addresses[0]
    internal = sorted(a for a in addresses if _is_internal(a))
    if internal:
        raise RefusedURL(
            f"{host} resolves to an internal address ({internal[0]}), which requests may not reach; "
            "an operator can allow it with LAMBDAML_ALLOWED_HOSTS"
        )
    return addresses[0]


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(url, headers, extensions)`` for httpx that reach ``address`` while asking ``url``'s host
    for ``url``: the Host header, and for https the TLS server name (also checked on its certificate)."""
    parts = urlsplit(url)
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc += f":{parts.port}"
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), headers, extensions


def input_locations(output_location: str | None) -> list[str]:
    """Where ``s3://``/``gs://`` inputs may be read: ``LAMBDAML_INPUT_BUCKETS`` (comma-separated
    ``s3://bucket`` or ``s3://bucket/prefix``, ``gs://...``) and the model's output location,
    where the client stages local files too big to send inline."""
    listed = [entry.strip().rstrip("/") for entry in os.environ.get("LAMBDAML_INPUT_BUCKETS", "").split(",")]
    return [entry for entry in [*listed, (output_location or "").rstrip("/")] if entry]


def check_location(url: str, locations: list[str]) -> None:
    """RefusedURL unless the bucket URL ``url`` is inside one of ``locations`` (whole path segments)."""
    if any(url == location or url.startswith(location + "/") for location in locations):
        return
    known = ", ".join(locations) if locations else "none are listed"
    raise RefusedURL(
        f"{url[:200]} is not in a location this model may read ({known}); "
        "an operator can list buckets or prefixes in LAMBDAML_INPUT_BUCKETS"
    )
