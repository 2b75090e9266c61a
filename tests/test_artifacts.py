"""The artifact store: content versions, signatures, deploy records, rollback targets, on a local fsspec folder.

Without a cluster, the signing key comes from ``LAMBDAML_SIGNING_KEY`` (as for replicas that
read it from their environment); tests/test_deploy.py checks the cluster's own key.
"""

import hashlib
import json

import pytest

from lambdaml import NotDeployedError
from lambdaml.artifacts import ArtifactStore, ArtifactTampered, Manifest, load_code, load_manifest
from lambdaml.spec import build_spec


KEY = "k" * 32


@pytest.fixture(autouse=True)
def signing_key(monkeypatch):
    monkeypatch.setenv("LAMBDAML_SIGNING_KEY", KEY)


def manifest(**changes) -> Manifest:
    return Manifest(**{"name": "m", "python": "3.11", "spec": {"name": "m"}, **changes})


SMALL = build_spec(name="m").settings()  # hardware and scaling a deploy record keeps
BIG = build_spec(name="m", gpu="H100", cpu=4, min=1, max=8, timeout=600).settings()


def test_same_content_same_version_and_kept_once(tmp_path):
    store = ArtifactStore(str(tmp_path))
    first = store.save(manifest(), b"code-1")
    again = store.save(manifest(), b"code-1")
    assert first.version == again.version and first.created_at == again.created_at
    assert store.save(manifest(), b"code-2").version != first.version
    assert store.save(manifest(requirements=["x==1"]), b"code-1").version != first.version
    url = store.artifact_url("m", first.version)
    assert load_code(url, load_manifest(url)) == b"code-1" and load_manifest(url).code_bytes == 6
    assert len(first.version) == 20


def test_code_changed_in_the_store_is_refused_before_it_is_unpickled(tmp_path):
    store = ArtifactStore(str(tmp_path))
    saved = store.save(manifest(), b"honest code")
    url = store.artifact_url("m", saved.version)
    (tmp_path / "m" / saved.version / "model.pkl").write_bytes(b"evil code")  # whoever can write the store
    with pytest.raises(ArtifactTampered, match="changed after lambdaml stored it"):
        load_code(url, load_manifest(url))


def test_a_manifest_changed_unsigned_or_signed_for_another_cluster_is_refused(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path))
    saved = store.save(manifest(requirements=["tabulate==0.9.0"]), b"code")
    url, folder = store.artifact_url("m", saved.version), tmp_path / "m" / saved.version
    stored = (folder / "manifest.json").read_text()
    changed = json.loads(stored) | {"requirements": ["tabulate==0.9.0", "evil @ https://example.com/evil.tar.gz"]}
    (folder / "manifest.json").write_text(json.dumps(changed))  # pip would run evil's setup.py
    with pytest.raises(ArtifactTampered, match="does not match its signature"):
        load_manifest(url)
    (folder / "manifest.json").write_text(stored)
    assert load_manifest(url).requirements == ["tabulate==0.9.0"]
    monkeypatch.setenv("LAMBDAML_SIGNING_KEY", "another cluster's key, 32 chars+")
    with pytest.raises(ArtifactTampered, match="not signed with this cluster's key"):
        load_manifest(url)
    assert store.save(manifest(requirements=["tabulate==0.9.0"]), b"code").version == saved.version  # deployed there too
    assert load_manifest(url).created_at == saved.created_at and len(list((folder / "signatures").iterdir())) == 2
    monkeypatch.setenv("LAMBDAML_SIGNING_KEY", KEY)
    assert load_manifest(url).version == saved.version  # each cluster keeps its own signature


def test_something_planted_under_a_version_is_replaced_not_signed(tmp_path):
    """A store writer who puts code under the version a deploy will compute gets it overwritten."""
    store = ArtifactStore(str(tmp_path))
    honest = store.save(manifest(), b"honest code")
    folder = tmp_path / "m" / honest.version
    (folder / "model.pkl").write_bytes(b"evil code")
    evil_manifest = json.loads((folder / "manifest.json").read_text()) | {"code_sha256": hashlib.sha256(b"evil code").hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(evil_manifest))
    for signature in (folder / "signatures").iterdir():
        signature.unlink()
    again = store.save(manifest(), b"honest code")
    url = store.artifact_url("m", again.version)
    assert again.version == honest.version and load_code(url, load_manifest(url)) == b"honest code"


def test_a_short_signing_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDAML_SIGNING_KEY", "short")
    from lambdaml._signing import SigningKeyMissing

    with pytest.raises(SigningKeyMissing, match="shorter than 32 characters"):
        ArtifactStore(str(tmp_path)).save(manifest(), b"code")


def test_versions_deploys_and_previous(tmp_path):
    store = ArtifactStore(f"file://{tmp_path}")
    a = store.save(manifest(), b"a").version
    b = store.save(manifest(), b"b").version
    store.record_deploy("m", a, SMALL)
    store.record_deploy("m", b, SMALL)
    store.record_deploy("m", b, SMALL)  # redeploying the current version as it runs records nothing
    rows = {row.version: row for row in store.versions("m")}
    assert rows[b].current and not rows[a].current and len(rows[b].deployed_at) == 1
    assert store.previous_version("m") == a
    store.record_deploy("m", b, BIG)  # `lambdaml scale`: the same version, other settings
    rows = {row.version: row for row in store.versions("m")}
    assert len(rows[b].deployed_at) == 2 and rows[b].settings == BIG and rows[a].settings == SMALL
    assert store.deployed_settings("m", b) == BIG and store.previous_version("m") == a
    store.record_deploy("m", a, SMALL)  # a rollback
    assert store.current_version("m") == a and store.previous_version("m") == b


def test_the_version_is_the_code_whatever_the_hardware_and_scaling(tmp_path):
    store = ArtifactStore(str(tmp_path))
    small = store.save(manifest(spec={"name": "m", **SMALL}), b"a")
    big = store.save(manifest(spec={"name": "m", **BIG}), b"a")
    assert big.version == small.version and big.model_spec().settings() == SMALL  # as first stored
    assert store.save(manifest(spec={"name": "m", "env": {"MODE": "fast"}}), b"a").version != small.version


def test_unknown_names_and_first_versions_say_so(tmp_path):
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(NotDeployedError, match="No versions of 'ghost'"):
        store.versions("ghost")
    store.record_deploy("m", store.save(manifest(), b"a").version, SMALL)
    with pytest.raises(NotDeployedError, match="no earlier deployed version"):
        store.previous_version("m")


def test_a_stored_spec_reads_back_anywhere(tmp_path, monkeypatch):
    from lambdaml import model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "requirements.txt").write_text("tabulate==0.9.0\n")
    spec = model(name="m", gpu=["H100:2", "A100"], requirements="requirements.txt", secrets=["T"])(len).spec
    stored = Manifest(name="m", python="3.11", spec=spec.model_dump(mode="json"))
    monkeypatch.chdir("/")  # a replica does not have the requirements file
    assert stored.model_spec() == spec


def test_live_models_are_those_deployed_and_not_deleted_since(tmp_path):
    store = ArtifactStore(str(tmp_path))
    def stored(name: str) -> str:
        return store.save(Manifest(name=name, python="3.11", spec={"name": name}), name.encode()).version

    for name in ("kept", "gone", "back"):
        store.record_deploy(name, stored(name), SMALL)
    stored("stored-only")  # never deployed
    store.record_delete("gone")
    store.record_delete("back")
    store.record_deploy("back", store.current_version("back"), SMALL)  # deployed again after its delete
    assert store.live_models() == ["back", "kept"]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_bucket_store_keeps_versions_signatures_and_deploy_records(scheme, request):
    """The same store on moto's S3 server and the GCS emulator, through fsspec (tests/conftest.py)."""
    fs = request.getfixturevalue({"s3": "s3", "gs": "gcs"}[scheme])
    root = f"{scheme}://lmt-bucket/artifact-store-test"
    store = ArtifactStore(root)
    saved = store.save(manifest(), b"code in a bucket")
    assert store.save(manifest(), b"code in a bucket").version == saved.version  # kept once
    url = store.artifact_url("m", saved.version)
    assert url.startswith(f"{root}/m/") and load_code(url, load_manifest(url)) == b"code in a bucket"
    store.record_deploy("m", saved.version, SMALL)
    assert store.current_version("m") == saved.version and store.live_models() == ["m"]
    fs.pipe(f"lmt-bucket/artifact-store-test/m/{saved.version}/model.pkl", b"evil code")
    with pytest.raises(ArtifactTampered, match="changed after lambdaml stored it"):
        load_code(url, load_manifest(url))
