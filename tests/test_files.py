"""Files: Path inputs fetched from S3, GCS, HTTP and data: URIs; outputs uploaded; refusals; the weights cache.

Everything runs against real endpoints on loopback: moto's S3 server, the GCS
emulator and a local HTTP server (see conftest.py), first directly, then
through a deployed model over HTTP.
"""

import base64
import multiprocessing
import os
import pathlib
import subprocess
import sys
from typing import Optional

import httpx
import pytest
from pydantic import BaseModel

import lambdaml
from lambdaml import Input, Path, model
from lambdaml import _weights
from lambdaml._urls import RefusedURL
from lambdaml.serve.transfer import FetchError, OutputError, fetch, upload_outputs

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def stored(s3, gcs, http_files):
    """The same small file in S3, GCS and on the HTTP server."""
    s3.pipe("lmt-bucket/in/pixel.png", PNG)
    s3.pipe("lmt-bucket/inside/pixel.png", PNG)
    gcs.pipe("lmt-bucket/in/pixel.png", PNG)
    os.environ["LAMBDAML_INPUT_BUCKETS"] = "s3://lmt-bucket/in, gs://lmt-bucket/in/"  # forwarded to replicas
    folder, base, _ = http_files
    (folder / "pixel.png").write_bytes(PNG)
    return {
        "s3": "s3://lmt-bucket/in/pixel.png",
        "gs": "gs://lmt-bucket/in/pixel.png",
        "http": f"{base}/pixel.png",
        "data": "data:image/png;base64," + base64.b64encode(PNG).decode(),
    }


# ------------------------------------------------------------------ directly, no Ray


@pytest.mark.parametrize("kind", ["s3", "gs", "http", "data"])
def test_fetch_streams_each_kind_of_url_to_a_local_file(stored, kind, tmp_path):
    local = fetch(stored[kind], tmp_path)
    assert local.read_bytes() == PNG and local.parent == tmp_path


def test_fetch_failures_say_what_is_wrong(stored, s3, tmp_path, monkeypatch):
    with pytest.raises(FetchError, match="no file at s3://lmt-bucket/in/missing.png"):
        fetch("s3://lmt-bucket/in/missing.png", tmp_path)
    with pytest.raises(FetchError, match="no file at gs://lmt-bucket/nope"):
        fetch("gs://lmt-bucket/nope", tmp_path)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(stored["http"].replace("pixel", "absent"), tmp_path)
    monkeypatch.setenv("LAMBDAML_MAX_INPUT_BYTES", "10")
    for kind in ("s3", "http"):
        with pytest.raises(FetchError, match="over the limit of .* per input"):
            fetch(stored[kind], tmp_path)


def test_a_redirect_to_an_internal_address_is_refused_before_it_is_followed(stored, http_files, tmp_path):
    _, base, requests = http_files
    assert fetch(f"{base}/redirect?to=/pixel.png", tmp_path).read_bytes() == PNG  # an allowed host: followed
    for target in ("http://169.254.169.254/latest/meta-data/", "http://100.100.100.200/", "file:///etc/passwd"):
        with pytest.raises(RefusedURL, match="internal address|local path"):
            fetch(f"{base}/redirect?to={target}", tmp_path)
    assert sum(path.startswith("/redirect?to=") for path in requests) >= 4  # each was asked, then refused


def test_outputs_are_uploaded_inline_or_refused(s3, gcs, tmp_path, monkeypatch):
    class Result(BaseModel):
        image: Path
        note: str

    picture = tmp_path / "out.png"
    picture.write_bytes(PNG)
    output = {"images": [Path(picture)], "result": Result(image=Path(picture), note="ok")}
    uploaded = upload_outputs(output, "pred-1", "s3://lmt-bucket/out")
    assert uploaded["images"] == ["s3://lmt-bucket/out/pred-1/out.png"] and uploaded["result"].note == "ok"
    assert s3.cat("lmt-bucket/out/pred-1/out.png") == PNG
    assert upload_outputs(Path(picture), "pred-2", "gs://lmt-bucket/out") == "gs://lmt-bucket/out/pred-2/out.png"
    assert gcs.cat("lmt-bucket/out/pred-2/out.png") == PNG
    assert upload_outputs(Path(picture), "pred-3", None) == "data:image/png;base64," + base64.b64encode(PNG).decode()
    monkeypatch.setenv("LAMBDAML_PRESIGN_SECONDS", "600")
    presigned = upload_outputs(Path(picture), "pred-4", "s3://lmt-bucket/out")
    assert presigned.startswith("http://127.0.0.1:") and "Signature=" in presigned
    assert httpx.get(presigned, timeout=30).content == PNG  # anyone with the URL, no credentials
    monkeypatch.setenv("LAMBDAML_INLINE_MAX_BYTES", "10")
    with pytest.raises(OutputError, match="too big to return inline .* LAMBDAML_OUTPUT_URL=s3://"):
        upload_outputs(Path(picture), "pred-5", None)


def _fetch_weights(url: str, cache: str) -> str:
    os.environ["LAMBDAML_CACHE_DIR"] = cache
    return str(lambdaml.files.cached(url))


def test_weights_are_downloaded_once_by_concurrent_processes(http_files, tmp_path):
    folder, base, requests = http_files
    (folder / "weights.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    before = requests.count("/weights.bin")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        paths = pool.starmap(_fetch_weights, [(f"{base}/weights.bin", str(tmp_path))] * 8)
    assert len(set(paths)) == 1 and pathlib.Path(paths[0]).read_bytes() == (folder / "weights.bin").read_bytes()
    assert requests.count("/weights.bin") - before == 1


def test_weights_cache_evicts_least_recently_used(http_files, tmp_path, monkeypatch):
    folder, base, _ = http_files
    for name in ("a", "b", "c"):
        (folder / f"{name}.bin").write_bytes(b"x" * 1000)
    monkeypatch.setenv("LAMBDAML_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LAMBDAML_CACHE_MAX_BYTES", "2500")
    a = lambdaml.files.cached(f"{base}/a.bin")
    b = lambdaml.files.cached(f"{base}/b.bin")
    lambdaml.files.cached(f"{base}/a.bin")  # a is now more recent than b
    c = lambdaml.files.cached(f"{base}/c.bin")
    assert a.exists() and c.exists() and not b.exists()
    assert _weights.cache_dir() == tmp_path


# ------------------------------------------------------------------ through a deployed model


@model(name="file-probe", cpu=0.1, min=1, output_url="s3://lmt-bucket/results")
def file_probe(
    image: Path = Input(description="Any file"),
    extras: list[Path] = Input(default=[], description="More files"),
    mask: Optional[Path] = Input(default=None, description="An optional file"),
) -> dict:
    import shutil
    import tempfile

    out = pathlib.Path(tempfile.mkdtemp()) / "copy.png"
    shutil.copy(image, out)
    return {
        "sizes": [p.stat().st_size for p in [image, *extras] + ([mask] if mask else [])],
        "local": str(image),
        "copy": out,
    }


@model(name="file-inline", cpu=0.1, min=1)
def file_inline(image: Path) -> Path:
    return image


@pytest.fixture(scope="module")
def file_models(cluster, stored):
    """Deployed after the storage endpoints exist, so their settings are forwarded."""
    urls = [file_probe.deploy().url, file_inline.deploy().url]
    yield urls
    file_probe.delete()
    file_inline.delete()


def predict(url: str, inputs: dict) -> httpx.Response:
    return httpx.post(f"{url}/predictions", json={"input": inputs}, timeout=120)


def test_every_kind_of_input_reaches_predict_as_a_local_file(file_models, stored, s3):
    response = predict(file_models[0], {"image": stored["s3"], "extras": [stored["gs"], stored["http"]], "mask": stored["data"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded", body["error"]
    assert body["output"]["sizes"] == [len(PNG)] * 4
    assert not pathlib.Path(body["output"]["local"]).exists(), "input files must be removed after the prediction"
    assert body["output"]["copy"] == f"s3://lmt-bucket/results/{body['id']}/copy.png"
    assert s3.cat(body["output"]["copy"]) == PNG


def test_without_an_output_location_small_files_come_back_as_data_uris(file_models, stored):
    body = predict(file_models[1], {"image": stored["gs"]}).json()
    assert body["output"] == stored["data"]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("file:///etc/passwd", "local path"),
        ("/etc/passwd", "local path"),
        ("s3://lmt-bucket/in/missing.png", "there is no file at"),
        ("http://169.254.169.254/latest/meta-data/", "internal address"),
        ("http://127.0.0.1:9/secret", "internal address"),
        ("s3://lmt-bucket", "not a complete URL"),
        ("s3://some-other-bucket/secret.bin", "not in a location this model may read"),
        ("s3://lmt-bucket/inside/pixel.png", "LAMBDAML_INPUT_BUCKETS"),  # a prefix is whole path segments
        ("gs://lmt-bucket/artifacts/model.pkl", "not in a location this model may read"),
    ],
)
def test_refused_inputs_are_422s_naming_the_input(file_models, bad, reason):
    response = predict(file_models[0], {"image": bad})
    assert response.status_code == 422, response.text
    fields = response.json()["invalid_fields"]
    assert fields[0]["field"] == "image" and reason in fields[0]["message"]


def test_local_files_are_sent_by_run_and_remote(file_models, tmp_path):
    picture = tmp_path / "local.png"
    picture.write_bytes(PNG)
    assert lambdaml.run("file-probe", input={"image": str(picture)})["sizes"] == [len(PNG)]
    assert file_probe.remote(image=picture, extras=[picture])["sizes"] == [len(PNG)] * 2


def test_a_local_file_over_the_inline_limit_is_staged_once_in_the_output_location(file_models, s3, tmp_path,
                                                                                 monkeypatch):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024 + 1))  # over the 1 MiB inline limit
    monkeypatch.setenv("LAMBDAML_OUTPUT_URL", "s3://lmt-bucket/results")  # file-probe may read its output location
    assert lambdaml.run("file-probe", input={"image": str(big)})["sizes"] == [big.stat().st_size]
    staged = s3.glob("lmt-bucket/results/staging/*/big.bin")
    assert len(staged) == 1 and s3.cat(staged[0]) == big.read_bytes()
    monkeypatch.delenv("LAMBDAML_OUTPUT_URL")
    with pytest.raises(ValueError, match="larger than 1.0 MiB.*LAMBDAML_OUTPUT_URL"):
        lambdaml.run("file-probe", input={"image": str(big)})


def test_storage_credentials_reach_replicas_but_not_logs(deployed, s3):
    @model(name="cred-probe", cpu=0.1, min=1)
    def cred_probe() -> bool:
        import os

        print("key is", os.environ["AWS_SECRET_ACCESS_KEY"])
        return os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

    deployed(cred_probe)
    prediction = lambdaml.create_prediction("cred-probe", {})
    assert prediction["output"] is True
    assert "key is **********" in prediction["logs"] and os.environ["AWS_SECRET_ACCESS_KEY"] not in prediction["logs"]


def test_a_bucket_the_cluster_has_no_credentials_for_says_what_to_configure(s3, tmp_path):
    s3.pipe("lmt-bucket/in/nocred.bin", b"123")
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"], AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    script = (
        "import pathlib, sys\nfrom lambdaml.serve.transfer import FetchError, fetch\n"
        f"try:\n    fetch('s3://lmt-bucket/in/nocred.bin', pathlib.Path({str(tmp_path)!r}))\n"
        "except FetchError as exc:\n    print(exc)\n"
    )
    said = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert "has no credentials to read s3://lmt-bucket/in/nocred.bin" in said.stdout, said.stderr
    assert "AWS_" in said.stdout and "Traceback" not in said.stderr
