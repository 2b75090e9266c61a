"""Artifact signatures: only what a deployer of this cluster stored gets run on it.

Whoever can write the artifact store (an S3 bucket, a shared folder) could otherwise
replace a model's code or manifest (whose requirements pip installs) and have every
replica run it. Each artifact's ``manifest.json`` is therefore signed with the
cluster's key (HMAC-SHA256; the manifest holds the code's SHA-256, so the code is
covered too), and the key lives in the cluster, not in the store: in Ray's GCS
key-value store, which only the cluster's own drivers and workers reach.

Where the key comes from, first match wins:

- ``LAMBDAML_SIGNING_KEY`` in the environment: for clusters whose replicas get it
  from theirs (a KubeRay ``RayService`` fed from a Kubernetes Secret); the machine that
  deploys sets the same value. It is never forwarded to replicas.
- the cluster's key-value store. The embedded cluster puts it there at start from a
  file that outlives the cluster (``LAMBDAML_SIGNING_KEY_FILE``, default
  ``~/.lambdaml/signing-key``), so models brought back by ``lambdaml up`` still load;
  on another cluster the first deploy creates it.

One store can serve several clusters: signatures are kept per key
(``{artifact}/signatures/{key id}``), so each cluster runs only what its deployers signed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from lambdaml.errors import LambdamlError

KV_KEY = "signing-key"
ENV_KEY = "LAMBDAML_SIGNING_KEY"
_MIN_KEY_CHARS = 32  # 128 bits as hex: shorter keys are guessable offline from one signature


class SigningKeyMissing(LambdamlError):
    """The cluster has no signing key, so nothing stored can be trusted to run on it."""


def key_id(key: bytes) -> str:
    """A public name for a key (its signatures' file name): a hash, from which the key cannot be found."""
    return hashlib.sha256(b"lambdaml signing key id:" + key).hexdigest()[:16]


def sign(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def signed_by(key: bytes, manifest: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(key, manifest), signature.strip())


def _checked(value: str, where: str) -> bytes:
    if len(value.strip()) < _MIN_KEY_CHARS:
        raise SigningKeyMissing(f"The signing key in {where} is shorter than {_MIN_KEY_CHARS} characters: use a random one "
                                "(python -c 'import secrets; print(secrets.token_hex(32))').")
    return value.strip().encode()


def cluster_key(create: bool = False) -> bytes:
    """The key artifacts are signed with on this cluster (created in its key-value store if ``create``).

    Callers are connected to the cluster (a deploying driver, a replica, Serve's builder task).
    """
    if os.environ.get(ENV_KEY):
        return _checked(os.environ[ENV_KEY], ENV_KEY)
    from lambdaml.cluster.ray_internals import kv_get, kv_put

    stored = kv_get(KV_KEY)
    if stored is None and create:
        kv_put(KV_KEY, secrets.token_hex(32), overwrite=False)  # two first deploys at once agree on one key
        stored = kv_get(KV_KEY)
    if stored is None:
        raise SigningKeyMissing(
            "This cluster has no artifact signing key, so no stored artifact can be trusted to run on it. "
            "Deploy the model with lambdaml (`lambdaml deploy FILE`, or Model.deploy()), which creates the key; "
            f"for replicas that read it from their environment, set {ENV_KEY} there and where you deploy."
        )
    return _checked(stored, "the cluster's key-value store")


def install_key_file(path: Path) -> None:
    """Put the key kept in ``path`` (created there, readable by its owner only, if missing) into the cluster.

    Run by the embedded cluster's keeper at start.
    """
    from lambdaml.cluster.ray_internals import kv_put

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # kept from an earlier start: the key artifacts already stored were signed with
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
    kv_put(KV_KEY, _checked(path.read_text(), str(path)).decode())
