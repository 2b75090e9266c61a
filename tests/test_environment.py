"""Environment capture: which code ships by value, which packages are pinned, what the cluster lacks."""

import sys
import textwrap

import pytest

from lambdaml import DeployError, model
from lambdaml._installs import check_python, installed_here, missing, pip_refusal, runtime_env
from lambdaml.environment import requirements_for, scan_code, secret_values


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    """A helper module (importing a second helper and httpx) that exists only in a temporary folder."""
    (tmp_path / "lmt_helper.py").write_text(
        textwrap.dedent(
            """
            import httpx
            import lmt_inner

            def shout(text):
                return lmt_inner.suffix(text.upper())
            """
        )
    )
    (tmp_path / "lmt_inner.py").write_text("def suffix(text):\n    return text + '!'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("lmt_helper", "lmt_inner"):
        sys.modules.pop(name, None)


def test_local_helpers_ship_by_value_and_their_imports_are_pinned(helper_module):
    import lmt_helper

    def shout(text: str) -> str:
        import pydantic  # noqa: F401  (imported inside the function)

        return lmt_helper.shout(text)

    scan = scan_code(shout)
    assert {m.__name__ for m in scan.local_modules} == {"lmt_helper", "lmt_inner", __name__}  # its own module too
    assert {"httpx", "pydantic"} <= scan.packages
    assert not {"os", "sys", "lambdaml", "lmt_helper"} & scan.packages
    pins = requirements_for(model(shout).spec, scan)
    assert f"httpx=={__import__('httpx').__version__}" in pins and any(p.startswith("pydantic==") for p in pins)


def test_class_methods_are_scanned():
    class Model:
        def setup(self) -> None:
            import cloudpickle  # noqa: F401

        def predict(self) -> int:
            return 1

    assert "cloudpickle" in scan_code(Model).packages


def test_declared_packages_and_requirements_replace_detection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "requirements.txt").write_text("# pinned\ntabulate==0.9.0\nrich  # for tables\n")

    def f() -> int:
        import httpx  # noqa: F401

        return 1

    spec = model(packages=["numpy>=1"], requirements="requirements.txt")(f).spec
    assert requirements_for(spec, scan_code(f)) == ["numpy>=1", "tabulate==0.9.0", "rich"]


def test_only_what_the_cluster_lacks_is_installed():
    installed = {"httpx": "0.28.1", "tabulate": "0.8.0"}
    wanted = ["httpx==0.28.1", "HTTPX>=0.20", "tabulate==0.9.0", "left-pad", "./wheels/x.whl"]
    assert missing(wanted, installed) == ["tabulate==0.9.0", "left-pad", "./wheels/x.whl"]
    assert runtime_env([]) is None
    assert runtime_env(["tabulate==0.9.0"]) == {"pip": {"packages": ["tabulate==0.9.0"], "pip_check": False}}


def test_this_interpreter_satisfies_its_own_pins():
    python, installed = installed_here()
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert missing([f"pydantic=={installed['pydantic']}"], installed) == []


def test_pip_says_why_a_package_cannot_be_installed_without_installing_anything():
    refusal = pip_refusal(["tabulate==0.0.0.0.1"])
    assert "No matching distribution found for tabulate==0.0.0.0.1" in refusal and "from versions: ..." in refusal
    assert pip_refusal(["tabulate==0.9.0"]) is None
    with pytest.raises(ImportError):
        import tabulate  # noqa: F401  (a dry run: still not installed)


def test_python_mismatch_is_a_clear_error():
    check_python("3.11", "3.11")
    with pytest.raises(DeployError, match=r"runs Python 3.12 but the cluster runs Python 3.11"):
        check_python("3.11", "3.12")


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
