"""What the cluster lacks, what pip would install there, and the Python it runs."""

import sys

import pytest

from lambdaml import DeployError
from lambdaml._installs import check_python, installed_here, missing, pip_refusal, runtime_env


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
