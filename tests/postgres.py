"""A real PostgreSQL server for tests and benchmarks, on 127.0.0.1 and a folder of its own.

PostgreSQL refuses to run as root, and CI runs as root, so the server then runs
as ``nobody``, owning its folder. It uses the Debian packages' binaries
(``apt-get install postgresql``), the newest version installed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg

from lambdaml.cluster.head import free_port

SERVER_USER = "nobody"  # only used when running as root


def _bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``initdb``."""
    found = sorted(
        (Path(path).parent for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL's server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "the tests need a real server: apt-get install postgresql"
        )
    return found[-1]


def _run(command: list[str], folder: Path) -> None:
    """Run a server command as the server's user; the output goes into the error if it fails."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """Start a server with data and socket in ``folder``; yield its ``postgresql://`` URL; stop it."""
    bin_dir = _bin_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    if os.geteuid() == 0:  # the server's user must own its folder and reach it
        user = pwd.getpwnam(SERVER_USER)
        shutil.chown(folder, user.pw_uid, user.pw_gid)
        if subprocess.run(["runuser", "-u", SERVER_USER, "--", "test", "-w", str(folder)]).returncode:
            raise RuntimeError(
                f"{SERVER_USER} cannot enter {folder}: every folder above it must be open to others "
                "(pytest's tmp_path is not; use tempfile.mkdtemp())"
            )
    port = free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8"]
    _run(initdb, folder)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder}"
    log = folder / "server.log"
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"], folder)
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE lambdaml")
        yield f"postgresql://postgres@127.0.0.1:{port}/lambdaml"
    finally:
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], folder)
