"""Secret values read where a model is deployed."""

import pytest

from lambdaml import DeployError
from lambdaml._secrets import secret_values


def test_secrets_come_from_the_environment_then_dotenv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("FROM_FILE=file-value\nFROM_SHELL=ignored\n")
    monkeypatch.setenv("FROM_SHELL", "shell-value")
    assert secret_values(("FROM_SHELL", "FROM_FILE")) == {"FROM_SHELL": "shell-value", "FROM_FILE": "file-value"}
    with pytest.raises(DeployError, match="Secret NOWHERE is not set"):
        secret_values(("NOWHERE",))


def test_a_secret_too_short_to_mask_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("TINY_SECRET", "ab")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="TINY_SECRET is shorter than 4 characters, so it is not masked"):
        assert secret_values(("TINY_SECRET",)) == {"TINY_SECRET": "ab"}
