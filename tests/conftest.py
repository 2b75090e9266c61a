"""One real embedded Ray cluster per test session, on loopback ports of its own.

The environment is set at import time so that every lambdaml call in the
session, and every example run as a subprocess, finds this cluster rather
than a developer's own. The head has a fake A100 (one GPU plus the
``accelerator_type:A100`` resource) so GPU placement can be tested on CPU.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lambdaml.cluster.head import free_port as _free_port  # distinct ports, never handed out twice

TEST_TEMP_DIR = Path(tempfile.gettempdir()) / f"lmt-{os.getpid()}"  # short: socket paths are capped
os.environ.update(
    {
        "LAMBDAML_TEMP_DIR": str(TEST_TEMP_DIR),
        "LAMBDAML_ARTIFACTS": str(TEST_TEMP_DIR / "artifacts"),
        "LAMBDAML_SIGNING_KEY_FILE": str(TEST_TEMP_DIR / "signing-key"),
        "LAMBDAML_DATABASE_URL": f"sqlite:///{TEST_TEMP_DIR / 'records.db'}",
        "LAMBDAML_RAY_PORT": str(_free_port()),
        "LAMBDAML_HTTP_PORT": str(_free_port()),
        "LAMBDAML_DASHBOARD_PORT": str(_free_port()),
        "LAMBDAML_NUM_CPUS": "2",
        "LAMBDAML_NUM_GPUS": "1",
    }
)
for variable in ("LAMBDAML_ADDRESS", "RAY_ADDRESS", "LAMBDAML_URL", "LAMBDAML_OUTPUT_URL", "LAMBDAML_ALLOWED_HOSTS"):
    os.environ.pop(variable, None)
os.environ["COLUMNS"] = "200"  # the CLI's tables print whole URLs, as in a normal terminal
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"  # else every gcsfs call first waits 60 s on a gRPC probe

FAKE_GPU_RESOURCES = {"accelerator_type:A100": 1}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's cluster directory (Ray's logs and spill, artifacts, records: gigabytes) goes
    with it once its fixtures have stopped; after a failure it stays, for reading its logs."""
    if exitstatus == 0:
        shutil.rmtree(TEST_TEMP_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster():
    """The session's cluster, started on first use and stopped at the end."""
    from lambdaml import cluster as lambdaml_cluster

    lambdaml_cluster.start(resources=FAKE_GPU_RESOURCES)
    info = lambdaml_cluster.connect()
    yield info
    lambdaml_cluster.shutdown()


@pytest.fixture
def deployed(cluster):
    """Deploy models in a test and delete them afterwards: ``deployed(model)``."""
    models = []

    def deploy(model, **kwargs):
        models.append(model)
        return model.deploy(**kwargs)

    yield deploy
    for model in models:
        model.delete()


# ------------------------------------------------------------------ storage endpoints
#
# Started after the cluster, and announced only in this process's environment:
# replicas learn the endpoints and credentials the way they would in real use,
# through what lambdaml forwards when deploying.


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def s3(cluster):
    """A moto S3 server on loopback, with a bucket; yields an s3fs filesystem for it."""
    import s3fs

    from lambdaml.testing import local_s3

    with local_s3():
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("lmt-bucket")
        yield fs



@pytest.fixture(scope="session")
def gcs(cluster):
    """gcp-storage-emulator on loopback, with a bucket; yields a gcsfs filesystem for it."""
    import fsspec.config

    port = _free_port()
    emulator = subprocess.Popen(
        [str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={port}",
         "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port)
    os.environ.update({"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "FSSPEC_GS": '{"token": "anon", "project": "test"}'})
    fsspec.config.set_conf_env(fsspec.config.conf)
    import gcsfs

    fs = gcsfs.GCSFileSystem(skip_instance_cache=True)
    fs.mkdir("lmt-bucket")
    yield fs
    emulator.terminate()
    emulator.wait(10)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path.startswith("/redirect?to="):  # a server that sends its callers elsewhere
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="session")
def http_files(cluster, tmp_path_factory):
    """A loopback HTTP server for files, allow-listed for replicas; yields (folder, base URL, request log)."""
    folder = tmp_path_factory.mktemp("http-files")
    handler = functools.partial(_CountingHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    os.environ["LAMBDAML_ALLOWED_HOSTS"] = f"127.0.0.1:{port}"
    yield folder, f"http://127.0.0.1:{port}", _CountingHandler.requests
    server.shutdown()


@pytest.fixture(scope="session")
def postgres_url():
    """One real PostgreSQL server on loopback for the session (Debian's postgresql package); yields its URL."""
    from tests.postgres import postgres_server

    # Under /tmp, not tmp_path: the server runs as an unprivileged user, who cannot enter pytest's root-only folders.
    with tempfile.TemporaryDirectory(prefix="lmpg-") as folder, postgres_server(Path(folder)) as url:
        yield url


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    import psycopg

    server = request.getfixturevalue("postgres_url")
    name = f"test_{next(_databases)}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{server.rsplit('/', 1)[0]}/{name}"


def wait_until(check, what: str, limit_s: float = 10.0) -> float:
    """Seconds until ``check()`` holds (replicas refresh the token state twice a second)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit_s, what
        time.sleep(0.05)
    return time.monotonic() - started


@contextlib.contextmanager
def tokens_on(base: str, probe: str):
    """An admin and a predict token, ``(row, token)`` each, until the block ends; then every token revoked.

    The cluster is shared by the session: the API needs a token only while one is active, so
    afterwards it is open again for the modules that follow. ``probe``: a POST route of a
    deployed model, to see when its replicas have taken up the change.
    """
    import httpx

    from lambdaml import tokens

    def answer() -> int:
        return httpx.post(f"{base}{probe}", json={"input": {}}).status_code

    made = tokens.create("tests-admin", role="admin"), tokens.create("tests-user", role="predict")
    wait_until(lambda: answer() == 401, "the model's replica never saw the first token")
    try:
        yield made
    finally:
        for row in tokens.list():
            if row["revoked_at"] is None:
                tokens.revoke(row["id"], open_api=True)
        wait_until(lambda: answer() == 200, "the API did not open again after the last token was revoked")


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: Playwright's own browser download is not reachable here


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's) driven by Playwright, one per module that uses it.

    Not for the session: while Playwright's sync API is open, this thread has its event loop
    running, and later tests' ``asyncio.run`` would refuse to start.
    """
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "the page tests need Debian's chromium: apt-get install chromium (.ci/run installs it)"
    with sync_playwright() as playwright:
        # Without the background-networking flags Chromium keeps trying hosts this loopback-only machine cannot reach.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield launched
        launched.close()
