"""Code scan: which code ships by value and which packages are pinned."""

import sys
import textwrap

import pytest

from lambdaml import model
from lambdaml._code_scan import requirements_for, scan_code


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
