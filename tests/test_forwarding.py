"""What travels from the deploying shell to the replicas, and what is masked there."""

import os

import lambdaml
from lambdaml import model
from lambdaml._forwarding import forwarded_environment, sensitive_values


def test_storage_settings_travel_and_their_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lmt-aws-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("LAMBDAML_OUTPUT_URL", "s3://lmt-bucket/out")
    monkeypatch.setenv("LMT_UNRELATED", "stays home")
    forwarded = forwarded_environment()
    assert forwarded["AWS_SECRET_ACCESS_KEY"] == "lmt-aws-secret" and "LMT_UNRELATED" not in forwarded
    assert "lmt-aws-secret" in sensitive_values(forwarded)
    assert "http://127.0.0.1:9000" not in sensitive_values(forwarded)  # an endpoint is not a secret


def test_with_forwarding_off_no_credential_reaches_a_replica(deployed, monkeypatch):
    """LAMBDAML_FORWARD_CREDENTIALS=0: a cluster with its own cloud role gets lambdaml's settings only."""
    monkeypatch.setenv("LAMBDAML_FORWARD_CREDENTIALS", "0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lmt-never-forwarded")
    monkeypatch.setenv("LAMBDAML_INPUT_BUCKETS", "s3://lmt-forwarding-check")

    @model(name="forward-probe", cpu=0.1, min=1)
    def forward_probe() -> dict:
        import os

        return {name: os.environ.get(name) for name in ("AWS_SECRET_ACCESS_KEY", "LAMBDAML_INPUT_BUCKETS")}

    deployed(forward_probe)
    assert lambdaml.run("forward-probe", {}) == {
        "AWS_SECRET_ACCESS_KEY": None,
        "LAMBDAML_INPUT_BUCKETS": "s3://lmt-forwarding-check",
    }
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "lmt-never-forwarded"  # still set here, only not sent
