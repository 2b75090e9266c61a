"""Secret values, read where the model is deployed: from the environment, else a ``.env`` file.

They are delivered to the replicas and never stored with the code (``package.build``
refuses code that captured one); values too short to mask in logs are reported.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from lambdaml.errors import DeployError
from lambdaml.serve.log_capture import MIN_MASKED


def secret_values(names: tuple[str, ...], dotenv_path: str = ".env") -> dict[str, str]:
    """Secret values from this process's environment, else from a ``.env`` file."""
    from dotenv import dotenv_values

    from_file = dotenv_values(dotenv_path) if names and Path(dotenv_path).is_file() else {}
    values, absent = {}, []
    for name in names:
        value = os.environ.get(name, from_file.get(name))
        if value is None:
            absent.append(name)
        else:
            values[name] = value
    if absent:
        raise DeployError(
            f"Secret {', '.join(absent)} is not set. Set it in this shell (export {absent[0]}=...) "
            f"or in a .env file in {Path.cwd()}."
        )
    short = [name for name, value in values.items() if value and len(value) < MIN_MASKED]
    if short:
        warnings.warn(
            f"Secret {', '.join(short)} is shorter than {MIN_MASKED} characters, so it is not masked in logs "
            "(masking it would garble every line that happens to contain those characters).",
            stacklevel=2,
        )
    return values
