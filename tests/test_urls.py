"""Which URLs a request may hand to a replica: schemes, local paths, internal hosts, the allow-list."""

import pytest

from lambdaml._urls import RefusedURL, check_host, check_syntax


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
    ],
)
def test_internal_hosts_are_refused(url, monkeypatch):
    monkeypatch.delenv("LAMBDAML_ALLOWED_HOSTS", raising=False)
    with pytest.raises(RefusedURL, match="internal address"):
        check_host(url)


def test_the_allow_list_admits_named_hosts_and_ports(monkeypatch):
    monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", "127.0.0.1:8123, models.internal")
    check_host("http://127.0.0.1:8123/w.bin")
    check_host("http://models.internal/w.bin")
    with pytest.raises(RefusedURL):
        check_host("http://127.0.0.1:8124/w.bin")  # another port of the same host
