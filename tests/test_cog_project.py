"""Reading Cog projects: what cog.yaml gives a model, and every refusal as one clear CLI error.

No cluster: ``lambdaml deploy`` reads and checks the project before it connects to anything.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap
import types

import pytest
from typer.testing import CliRunner

from lambdaml import cog
from lambdaml.cli import app
from lambdaml.cog import project as cog_project
from lambdaml.errors import ConfigError

# Refused deploys start the embedded cluster (to read what it has): the session's cluster fixture stops it.
pytestmark = pytest.mark.usefixtures("cluster")

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples" / "cog"
PREDICTOR = textwrap.dedent(
    """
    from cog import BasePredictor, Input

    class Predictor(BasePredictor):
        def predict(self, text: str = Input(description="Some text")) -> str:
            return text
    """
)


def make_project(folder: pathlib.Path, config: str, predict: str = PREDICTOR, **files: str) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cog.yaml").write_text(textwrap.dedent(config))
    (folder / "predict.py").write_text(predict)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def deploy_refused(*args: str) -> str:
    """Run ``lambdaml deploy ARGS`` that must be refused: exit 1, a short message, no traceback."""
    result = CliRunner().invoke(app, ["deploy", *args])
    output = result.output
    assert result.exit_code == 1, output
    assert "Traceback" not in output and output.startswith("Error: ")
    assert len(output.strip().splitlines()) <= 3, output
    return output


HERE = "{}.{}".format(*sys.version_info[:2])  # the cluster's Python: the suite's own
OTHER = "3.13" if HERE != "3.13" else "3.12"


def test_cog_yaml_gives_the_model_its_defaults(tmp_path):
    root = make_project(tmp_path / "My_Captioner", """
        build:
          gpu: true
          python_version: "HERE"
          python_packages: ["tabulate==0.9.0", "local pkg/dist.whl"]
          python_requirements: requirements.txt
        predict: "predict.py:Predictor"
        concurrency:
          max: 6
        environment:
          - MODE=fast
          - EMPTY=
        """.replace("HERE", HERE), **{"requirements.txt": "# pins\nrich==13.7.1  # a comment\n\n", "local pkg/dist.whl": "not really"})
    project = cog_project.read(root)
    assert project.default_name == "my-captioner"
    assert project.packages[:1] == ("tabulate==0.9.0",) and project.packages[2] == "rich==13.7.1"
    assert project.packages[1] == str(root / "local pkg" / "dist.whl")  # a local archive, by its absolute path
    params = project.model_params()
    assert params["concurrency"] == 6 and params["env"] == {"MODE": "fast", "EMPTY": ""}
    assert params["gpu"][0] == "T4" and "H100" in params["gpu"]  # build.gpu: any GPU type
    assert project.python_note() is None


def test_the_project_ships_without_caches_or_ignored_files(tmp_path):
    root = make_project(tmp_path / "shipped", 'predict: "predict.py:Predictor"\n',
                        **{"helpers/util.py": "X = 1\n", ".git/HEAD": "ref\n", "__pycache__/a.pyc": "",
                           "weights/big.bin": "x" * 100, ".dockerignore": "weights\n*.log\n", "run.log": "noise"})
    project = cog_project.read(root)
    names = [path.relative_to(root).as_posix() for path in project.files()]
    assert names == [".dockerignore", "cog.yaml", "predict.py", "helpers/util.py"]
    assert project.archive() == project.archive()  # the same bytes, so the same version


def test_the_version_follows_the_files(tmp_path):
    root = make_project(tmp_path / "versioned", 'predict: "predict.py:Predictor"\n')
    from lambdaml.package import build

    before = build(cog.load(root), {})[1]
    assert build(cog.load(root), {})[1] == before  # loaded again: the same code, the same version
    (root / "notes.txt").write_text("changed")
    assert build(cog.load(root), {})[1] != before


def test_a_missing_cog_yaml(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "No cog.yaml in" in deploy_refused(str(tmp_path / "empty"))


def test_predict_names_a_missing_file_or_class(tmp_path):
    root = make_project(tmp_path / "nofile", 'predict: "model.py:Predictor"\n')
    assert "predict: no file model.py in" in deploy_refused(str(root))
    root = make_project(tmp_path / "noclass", 'predict: "predict.py:Runner"\n')
    assert "predict.py has no class or function 'Runner'" in deploy_refused(str(root / "cog.yaml"))
    root = make_project(tmp_path / "badref", 'predict: "predict.py"\n')
    assert "should name a file and a class" in deploy_refused(str(root))


def test_a_syntax_error_names_the_file_and_line(tmp_path, monkeypatch):
    # Another project's `predict` already loaded in this process (the suite reads several) must not stand in for it.
    mine = types.ModuleType("predict")
    monkeypatch.setitem(sys.modules, "predict", mine)
    root = make_project(tmp_path / "broken", 'predict: "predict.py:Predictor"\n', predict="def predict(:\n    pass\n")
    output = deploy_refused(str(root))
    assert "predict.py, line 1: SyntaxError" in output
    assert sys.modules["predict"] is mine  # and the process has its own back


def test_cogs_own_refusal_of_a_predictor(tmp_path):
    untyped = "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n    def predict(self, text) -> str:\n        return text\n"
    root = make_project(tmp_path / "untyped", 'predict: "predict.py:Predictor"\n', predict=untyped)
    assert "missing type annotation for input: text" in deploy_refused(str(root))


def test_system_packages_are_named_and_need_a_flag(tmp_path):
    root = make_project(tmp_path / "system", """
        build:
          system_packages: ["ffmpeg", "libgl1"]
          run: ["echo hi"]
        predict: "predict.py:Predictor"
        """)
    output = deploy_refused(str(root))
    assert "system packages ffmpeg, libgl1" in output and "1 build.run command" in output
    assert "--ignore-system-packages" in output
    assert cog.load(root, ignore_system_packages=True).name == "system"


def test_a_directory_too_big_to_ship(tmp_path):
    root = make_project(tmp_path / "heavy", 'predict: "predict.py:Predictor"\n')
    (root / "model.safetensors").write_bytes(b"\0" * (cog_project.MAX_PROJECT_BYTES + 1))
    output = deploy_refused(str(root))
    assert "the biggest is model.safetensors" in output and "lambdaml.files.cached" in output


def test_another_python_is_one_line_or_refused(tmp_path):
    root = make_project(tmp_path / "other", f'build:\n  python_version: "{OTHER}"\npredict: "predict.py:Predictor"\n')
    assert f"asks for Python {OTHER}; the model runs on the cluster's Python {HERE}" in cog.load(root).notes[0]
    assert "--strict-python" in deploy_refused(str(root), "--strict-python")


def test_cog_options_belong_to_cog_projects():
    assert "apply to Cog projects" in deploy_refused(str(EXAMPLES.parent / "hello.py"), "--name", "other")


def test_bad_settings_in_cog_yaml(tmp_path):
    root = make_project(tmp_path / "conc", 'predict: "predict.py:Predictor"\nconcurrency:\n  max: 0\n')
    assert "concurrency.max must be a whole number of at least 1" in deploy_refused(str(root))
    root = make_project(tmp_path / "env", 'predict: "predict.py:Predictor"\nenvironment: ["NOVALUE"]\n')
    assert "should be NAME=value" in deploy_refused(str(root))
    with pytest.raises(ConfigError, match="--upload-url"):
        cog.load(EXAMPLES / "tuned", upload_url="s3://bucket/")
