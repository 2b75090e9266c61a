"""The pages at /ui in a real browser (Debian's headless Chromium, driven by Playwright) against the
session's cluster: the overview, a model's playground (form, 422s, image upload, streamed text),
its history and monitoring, the token prompt, and that opening pages wakes no replica.

``LAMBDAML_UI_SCREENSHOTS=docs/img pytest tests/test_ui.py`` writes the README's screenshots.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from lambdaml import Input, model
from tests.conftest import tokens_on, wait_until

EXAMPLES = Path(__file__).parent.parent / "examples"
SCREENSHOTS = os.environ.get("LAMBDAML_UI_SCREENSHOTS")
WAIT_MS = 90_000  # a first prediction may start a replica from zero


@model(name="moody", cpu=0.05, min=0, max=1)
def moody(mood: str = Input(default="fine", choices=["fine", "grumpy"]), shout: bool = False) -> str:
    """Fails when grumpy: a model for counting errors."""
    if mood == "grumpy":
        raise ValueError("not today")
    print(f"feeling {mood}")
    return mood.upper() if shout else mood


@model(name="sleeper", cpu=0.05, min=0, max=1)
def sleeper(word: str = "zzz") -> str:
    return word


def _example(name: str):
    found = runpy.run_path(str(EXAMPLES / name), run_name="examples")
    return next(value for value in found.values() if type(value).__name__ == "Model")


@pytest.fixture(scope="module")
def site(cluster):
    """The examples the pages are tried on, deployed; yields the cluster's base URL."""
    models = [_example("hello.py"), _example("grayscale.py"), _example("stream_text.py"), moody, sleeper]
    for one in models:
        one.deploy()
    yield cluster.http_url
    for one in models:
        one.delete()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


def _shot(page, name: str) -> None:
    page.shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=True)


def _run(page, base: str, name: str, values: dict[str, str]) -> None:
    page.goto(f"{base}/ui/{name}")
    for field, value in values.items():
        page.get_by_label(field, exact=True).fill(value)
    page.get_by_role("button", name="Run").click()


def _records(base: str, name: str) -> list[dict]:
    return httpx.get(f"{base}/v1/predictions", params={"model": name}, timeout=30).json()["results"]


def test_the_overview_lists_the_models(site, page):
    page.goto(f"{site}/ui/")
    rows = page.get_by_test_id("models").locator("tbody tr")
    expect(rows.filter(has_text="hello")).to_have_count(1)
    for name in ("grayscale", "stream-text", "moody", "sleeper"):
        expect(page.locator(f"tr[data-model='{name}']")).to_be_visible()
    page.locator("tr[data-model='hello'] a", has_text="hello").click()
    expect(page.get_by_role("heading", name="hello")).to_be_visible()
    assert page.url.endswith("/ui/hello")
    assert httpx.get(f"{site}/", follow_redirects=False).headers["location"] == "/ui/"


def test_the_form_runs_a_prediction_and_shows_its_output_and_logs(site, page):
    _run(page, site, "hello", {"name": "ada", "times": "2"})
    expect(page.get_by_test_id("output")).to_have_text("hello ada hello ada", timeout=WAIT_MS)
    expect(page.get_by_test_id("status")).to_contain_text("succeeded")
    _shot(page, "playground")
    page.goto(f"{site}/ui/moody")
    page.get_by_label("mood").select_option("grumpy")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_test_id("error")).to_contain_text("not today", timeout=WAIT_MS)  # the prediction's own error
    expect(page.get_by_test_id("status")).to_contain_text("failed")
    page.get_by_label("mood").select_option("fine")
    page.get_by_role("switch").check()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_test_id("output")).to_have_text("FINE", timeout=WAIT_MS)
    expect(page.get_by_test_id("logs")).to_contain_text("feeling fine")


def test_a_422_shows_next_to_the_field_it_names(site, page):
    _run(page, site, "hello", {"name": "ada", "times": "9"})  # le=5
    error = page.locator(".field[data-field='times'] .error")
    expect(error).to_contain_text("less than or equal to 5", timeout=WAIT_MS)
    expect(page.locator(".field[data-field='name'] .error")).to_be_hidden()
    expect(page.get_by_label("times", exact=True)).to_be_focused()
    _shot(page, "invalid-input")
    page.get_by_label("name", exact=True).fill("")
    page.get_by_label("times", exact=True).fill("1")
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".field[data-field='name'] .error")).to_be_visible(timeout=WAIT_MS)  # required, missing


def test_an_uploaded_image_comes_back_as_an_image(site, page, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (96, 64), (200, 40, 90)).save(photo)
    page.goto(f"{site}/ui/grayscale")
    page.locator("#input-image").set_input_files(str(photo))  # sent inline as a data: URI
    page.get_by_role("button", name="Run").click()
    image = page.get_by_test_id("output").locator("img")
    expect(image).to_be_visible(timeout=WAIT_MS)
    assert image.evaluate("node => node.naturalWidth") == 96
    _shot(page, "image-output")
    big = tmp_path / "big.png"  # over the 1 MiB inline limit: uploaded to /v1/files first, as the clients do
    Image.frombytes("RGB", (800, 600), os.urandom(800 * 600 * 3)).save(big)
    assert big.stat().st_size > 2**20
    first = _records(site, "grayscale")[0]["id"]
    page.locator("#input-image").set_input_files(str(big))
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_test_id("status")).not_to_contain_text(first)
    expect(page.get_by_test_id("status")).to_contain_text("succeeded", timeout=WAIT_MS)
    assert image.evaluate("node => node.naturalWidth") == 800
    newest = _records(site, "grayscale")[0]
    assert newest["input"]["image"].startswith("lambdaml-file:")  # the signed reference to the uploaded file


def test_a_streaming_models_text_arrives_in_pieces(site, page):
    _run(page, site, "stream-text", {"prompt": "once", "words": "12", "delay": "0.25"})
    output, seen = page.get_by_test_id("output"), set()
    until = time.monotonic() + WAIT_MS / 1000
    while "succeeded" not in (page.get_by_test_id("status").text_content() or ""):
        assert time.monotonic() < until, "the stream never ended"
        text = output.text_content() or ""
        if text.startswith("once"):
            seen.add(text)
        if len(seen) == 3:
            _shot(page, "streaming")
        page.wait_for_timeout(50)
    final = output.text_content()
    assert final.startswith("once") and len(final.split()) == 13
    partial = {text for text in seen if text != final}
    assert len(partial) >= 2, f"the text came at once, not in pieces: {seen}"  # 12 words over 3 s


def test_the_history_lists_the_runs_and_runs_one_again(site, page):
    _run(page, site, "hello", {"name": "grace", "times": "3"})
    expect(page.get_by_test_id("output")).to_contain_text("hello grace", timeout=WAIT_MS)
    page.get_by_role("tab", name="History").click()
    rows = page.get_by_test_id("history").locator("tbody tr")
    records = _records(site, "hello")
    expect(rows).to_have_count(len(records))
    expect(rows.first).to_have_attribute("data-id", records[0]["id"])  # newest first
    _shot(page, "history")
    rows.first.get_by_role("button", name="Run again").click()
    expect(page.get_by_role("tab", name="Playground")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_label("name", exact=True)).to_have_value("grace")
    expect(page.get_by_label("times", exact=True)).to_have_value("3")
    page.get_by_role("tab", name="History").click()
    rows.nth(1).get_by_role("button", name="Open").click()
    expect(page.get_by_test_id("status")).to_contain_text(records[1]["id"])


def test_the_monitoring_panel_matches_the_records(site, page):
    def finished() -> list[dict]:
        return [record for record in _records(site, "moody") if record["status"] in ("succeeded", "failed", "canceled")]

    before = len(finished())  # the playground test's runs are in the records too
    for mood in ("fine", "fine", "grumpy", "fine"):
        httpx.post(f"{site}/moody/predictions", json={"input": {"mood": mood}}, timeout=120)
    wait_until(lambda: len(finished()) == before + 4, "the records of moody", 30)  # sent by the replica in batches
    records = finished()
    failed = sum(record["status"] == "failed" for record in records)
    page.goto(f"{site}/ui/moody#monitoring")
    figures = page.get_by_test_id("figures")
    expect(figures.locator("[data-figure='count'] .value")).to_have_text(str(len(records)))
    expect(figures.locator("[data-figure='failed'] .value")).to_have_text(str(failed))
    expect(figures.locator("[data-figure='error_rate'] .value")).to_have_text(f"{round(100 * failed / len(records))}%")
    chart = page.locator("[data-chart='per_minute']")
    expect(chart).to_contain_text(f"{len(records)} in all")
    assert chart.locator("rect").count() >= 1  # a bar where the predictions were
    expect(page.locator("[data-chart='error_rate'] rect").first).to_be_visible()
    _shot(page, "monitoring")
    page.get_by_role("button", name="Last 24 hours").click()
    expect(figures.locator("[data-figure='count'] .value")).to_have_text(str(len(records)))
    page.get_by_role("tab", name="API").click()
    expect(page.locator("[data-snippet='curl']")).to_contain_text(f"{site}/moody/predictions")
    expect(page.locator("[data-snippet='Python (replicate)']")).to_contain_text('client.run("lambdaml/moody"')
    _shot(page, "api")


def test_opening_the_pages_does_not_wake_a_scaled_to_zero_model(site, page):
    from ray import serve

    def replicas() -> int:
        app = serve.status().applications["sleeper"]
        return sum(sum(deployment.replica_states.values()) for deployment in app.deployments.values())

    assert replicas() == 0
    page.goto(f"{site}/ui/")
    expect(page.locator("tr[data-model='sleeper']")).to_contain_text("0 / 0")
    _shot(page, "overview")
    page.goto(f"{site}/ui/sleeper")
    for tab in ("History", "Monitoring", "API", "Playground"):
        page.get_by_role("tab", name=tab).click()
    expect(page.get_by_label("word", exact=True)).to_have_value("zzz")  # the form, from the catalog's schema
    page.wait_for_timeout(4000)  # Serve would have started a replica by now (metrics every 0.25 s)
    assert replicas() == 0


def test_the_pages_routes_and_their_refusals(site):
    page = httpx.get(f"{site}/ui/hello")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # what a model outputs never runs as script
    assert httpx.get(f"{site}/ui/static/app.js").headers["content-type"].startswith("text/javascript")
    for path in ("/ui/static/nothing.js", "/ui/hello/extra", "/ui/Not_A_Name", "/ui/api/models/nope", "/ui/api/other"):
        answer = httpx.get(f"{site}{path}")
        assert answer.status_code == 404 and answer.json()["detail"], path
    refused = httpx.post(f"{site}/ui/")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    bad = httpx.get(f"{site}/ui/api/models/hello/stats", params={"window": "7d"})
    assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "window"
    stray = httpx.post(f"{site}/no-such-model/predictions", json={"input": {}})  # the control app takes every other path
    assert stray.status_code == 404 and "No model named 'no-such-model'" in stray.json()["detail"]


def test_the_cli_opens_the_page_and_status_prints_the_last_hour(site, tmp_path):
    from typer.testing import CliRunner

    from lambdaml.cli import app

    shown = CliRunner().invoke(app, ["ui", "moody", "--no-browser"])
    assert shown.exit_code == 0 and shown.output.strip() == f"{site}/ui/moody"
    missing = CliRunner().invoke(app, ["ui", "nope"])
    assert missing.exit_code == 1 and "No model named 'nope'" in missing.output
    opened, recorder = tmp_path / "opened.txt", tmp_path / "browser.py"
    recorder.write_text(f"import sys, pathlib\npathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    run = subprocess.run([sys.executable, "-m", "lambdaml.cli", "ui"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "BROWSER": f"{sys.executable} {recorder} %s"})
    assert run.returncode == 0, run.stderr
    assert opened.read_text() == f"{site}/ui/" and "Opened in your browser" in run.stderr
    status = CliRunner().invoke(app, ["status", "moody"])
    totals = httpx.get(f"{site}/ui/api/models/moody/stats").json()["totals"]
    assert status.exit_code == 0 and "error rate" in status.output, status.output
    assert f"{totals['count']} ({totals['per_minute']:.2f} a minute)" in status.output
    assert f"({totals['failed']} failed)" in status.output


def test_with_tokens_on_the_page_asks_for_one_and_keeps_it_out_of_urls(site, page):
    with tokens_on(site, "/moody/predictions") as ((_, admin), _):
        page.goto(f"{site}/ui/")
        expect(page.get_by_text("No public models")).to_be_visible()
        page.goto(f"{site}/ui/moody")  # its API answers 401: the page asks
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        _shot(page, "token")
        dialog.get_by_label("Token").fill(admin)
        dialog.get_by_role("button", name="Save").click()
        expect(page.get_by_role("heading", name="moody")).to_be_visible()
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_test_id("output")).to_have_text("fine", timeout=WAIT_MS)
        assert admin not in page.url
        assert page.evaluate("localStorage.getItem('lambdaml.token')") == admin
        page.goto(f"{site}/ui/")
        expect(page.locator("tr[data-model='moody']")).to_be_visible()
