"""What travels from the deploying process's environment to the replicas: storage access and file settings.

Also which of those values are secret, so that a replica masks them in its logs.
"""

from __future__ import annotations

import os
import re

# Storage credentials and endpoints (the standard AWS and GCP chains read these), fsspec's
# own settings, and the file settings of lambdaml.files: what replicas need to move files.
_FORWARDED = re.compile(
    r"^(AWS_\w+|GOOGLE_\w+|GCLOUD_\w+|CLOUDSDK_\w+|GCSFS_\w+|FSSPEC_\w+|STORAGE_EMULATOR_HOST"
    r"|LAMBDAML_(OUTPUT_URL|ALLOWED_HOSTS|INPUT_BUCKETS|MAX_INPUT_BYTES|INLINE_MAX_BYTES|PRESIGN_SECONDS|MAX_REQUEST_BYTES))$"
)
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|FSSPEC_", re.IGNORECASE)


def forwarded_environment() -> dict[str, str]:
    """Storage credentials and file settings of this process, for the replicas.

    ``LAMBDAML_FORWARD_CREDENTIALS=0`` keeps the storage credentials at home (a
    cluster with its own IAM role); lambdaml's file settings still travel.
    """
    keep_credentials = os.environ.get("LAMBDAML_FORWARD_CREDENTIALS", "1").lower() not in ("0", "false", "no")
    return {
        name: value
        for name, value in os.environ.items()
        if _FORWARDED.match(name) and (keep_credentials or name.startswith("LAMBDAML_"))
    }


def sensitive_values(environment: dict[str, str]) -> list[str]:
    """The values of ``environment`` whose names say they are secret, for masking in logs."""
    return [value for name, value in environment.items() if value and _SECRET_NAME.search(name)]
