"""Saving a prediction's output files where ``lambdaml predict -o DIR`` says, and nowhere else."""

import base64
import http.server
import threading

import pytest

from lambdaml import InputError
from lambdaml._cli_io import parse_inputs, save_output_files


def test_a_server_chosen_name_cannot_leave_the_folder_and_nothing_is_overwritten(tmp_path):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"new")

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "result.txt").write_bytes(b"mine")
    (folder / "output.png").write_bytes(b"mine too")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/files"
        png = "data:image/png;base64," + base64.b64encode(b"png").decode()
        _, saved = save_output_files(
            [png, f"{base}/..%2F..%2Fescaped.txt", f"{base}/%2E%2E%5Cwindows.txt", f"{base}/result.txt"], folder
        )
    finally:
        server.shutdown()
    assert all(path.parent == folder for path in saved), saved
    assert [path.name for path in saved] == ["output-1.png", "escaped.txt", "windows.txt", "result-1.txt"]
    assert not (tmp_path / "escaped.txt").exists()
    assert (folder / "result.txt").read_bytes() == b"mine" and (folder / "output.png").read_bytes() == b"mine too"


def test_an_input_given_twice_is_named():
    schema = {"properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}}
    with pytest.raises(InputError, match="Input name was given twice"):
        parse_inputs(["name=ada", "name=bob"], schema)
    assert parse_inputs(["tags=a", "tags=b"], schema) == {"tags": ["a", "b"]}  # a list input takes several
