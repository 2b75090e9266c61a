"""Which URLs a request may hand to a replica: schemes, local paths, internal hosts, the allow-list."""

import http.server
import threading

import httpx
import pytest

from lambdaml._urls import RefusedURL, check_host, check_syntax, pinned


@pytest.mark.parametrize("url", ["s3://b/k.png", "gs://b/dir/k", "https://example.com/a.png", "data:,hi"])
def test_supported_urls_pass(url):
    assert check_syntax(url) == url.split(":")[0]


@pytest.mark.parametrize(
    "url, reason",
    [
        ("file:///etc/passwd", "local path"),
        ("/etc/passwd", "local path"),
        ("photo.png", "local path"),
        ("C:/photos/a.png", "local path"),
        ("ftp://example.com/a", "ftp: scheme is not supported"),
        ("s3://bucket-only", "not a complete URL"),
        ("https:///nohost", "not a complete URL"),
    ],
)
def test_local_paths_and_odd_urls_are_refused(url, reason):
    with pytest.raises(RefusedURL, match=reason):
        check_syntax(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://[::1]/x",
        "http://0.0.0.0/x",
        "http://100.100.100.200/latest/meta-data/",  # carrier-grade NAT: one cloud's metadata service
        "http://100.64.0.1/x",
        "http://198.18.0.1/x",  # benchmarking range
        "http://192.0.2.1/x",  # documentation range
        "http://[::ffff:127.0.0.1]/x",
        "http://[fc00::1]/x",
        "http://224.0.0.1/x",
    ],
)
def test_internal_hosts_are_refused(url, monkeypatch):
    monkeypatch.delenv("LAMBDAML_ALLOWED_HOSTS", raising=False)
    with pytest.raises(RefusedURL, match="internal address"):
        check_host(url)


def test_the_allow_list_admits_named_hosts_and_ports(monkeypatch):
    monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", "127.0.0.1:8123, localhost")
    assert check_host("http://127.0.0.1:8123/w.bin") == "127.0.0.1"
    assert check_host("http://localhost/w.bin") in ("127.0.0.1", "::1")
    with pytest.raises(RefusedURL):
        check_host("http://127.0.0.1:8124/w.bin")  # another port of the same host


def test_a_request_goes_to_the_address_that_was_checked_with_the_host_it_named(monkeypatch):
    """No second lookup (DNS rebinding): the connection is made to the checked address, the Host header kept."""
    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["host"], seen["path"] = self.headers["Host"], self.path
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", f"localhost:{port}")
        url = f"http://localhost:{port}/weights.bin?v=1"
        target, headers, extensions = pinned(url, "127.0.0.1")
        assert target == f"http://127.0.0.1:{port}/weights.bin?v=1" and extensions == {}
        assert httpx.get(target, headers=headers).text == "ok"
        assert seen == {"host": f"localhost:{port}", "path": "/weights.bin?v=1"}
        assert pinned("https://example.com/a", "::1")[0] == "https://[::1]/a"
        assert pinned("https://example.com/a", "::1")[2] == {"sni_hostname": "example.com"}
    finally:
        server.shutdown()
