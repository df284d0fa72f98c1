"""End to end: the FiftyOne App server on 127.0.0.1, driven by headless Chromium (Playwright
with the Debian browser): open a dataset, run the operator from the operator browser, and
check that scores and tags appear. The screenshot is kept in test-artifacts/."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image

from bpclip_plugins.fiftyone import install_plugin

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_server(app_dataset, tmp_path):  # the dataset first: this process starts mongod
    yield from _serve(tmp_path)  # the bundled default model: real, distinct scores to band


@pytest.fixture
def broken_app_server(app_dataset, tmp_path):
    """An App whose default model cannot load: BPCLIP_CHECKPOINT names a missing file."""
    yield from _serve(tmp_path, BPCLIP_CHECKPOINT=str(tmp_path / "gone.safetensors"))


def _serve(tmp_path, **environment):
    port = _free_port()
    env = dict(os.environ, **environment)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "fiftyone.server.main", "--address", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:  # the first requests can fail while the server connects to mongod
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the FiftyOne App server did not start: " + (tmp_path / "server.log").read_text())
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def app_dataset(tmp_path):
    rng = np.random.default_rng(0)
    name = "bpclip-app-e2e"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    for i in range(4):
        path = tmp_path / f"photo{i}.png"
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((160, 120), Image.BILINEAR).save(path)
        ds.add_sample(fo.Sample(filepath=str(path)))
    yield ds
    ds.delete()


def _open_operator(playwright, url: str, dataset_name: str):
    """Chromium on the dataset's page with the BPCLIP operator's form open: (browser, page)."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )  # fmt: skip
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/datasets/{dataset_name}", wait_until="load", timeout=120_000)
    page.locator('[data-cy="action-browse-operations"]').first.wait_for(timeout=90_000)
    dismiss = page.get_by_role("button", name="Dismiss")  # the App's promotional pop-up
    if dismiss.count():
        dismiss.first.click()
    page.locator('[data-cy="action-browse-operations"]').first.click(timeout=30_000)
    page.locator('[data-cy="operators-browser-search"]').fill("BPCLIP")
    page.get_by_text("BPCLIP: compute image quality").first.click(timeout=30_000)
    page.get_by_text("Quality bands").first.wait_for(timeout=30_000)
    return browser, page


def test_a_run_that_cannot_work_says_why_in_the_app(app_dataset, broken_app_server):
    from playwright.sync_api import sync_playwright

    install_plugin()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = _open_operator(playwright, broken_app_server, app_dataset.name)
        try:
            page.get_by_text("gone.safetensors", exact=False).first.wait_for(timeout=60_000)  # under the field
            page.screenshot(path=str(ARTIFACTS / "fiftyone-form-error.png"))
            execute = page.get_by_role("button", name="Execute")
            if execute.count() and execute.first.is_enabled():
                execute.first.click(timeout=10_000)
        finally:
            browser.close()
    app_dataset.reload()
    assert "bpclip_score" not in app_dataset.get_field_schema()  # nothing ran, nothing half-written


def test_operator_from_the_app(app_dataset, app_server):
    from playwright.sync_api import sync_playwright

    install_plugin()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = _open_operator(playwright, app_server, app_dataset.name)
        page.screenshot(path=str(ARTIFACTS / "fiftyone-operator-form.png"))
        try:
            page.get_by_role("button", name="Execute").click(timeout=60_000)
            # the outcome is said in the App: which model, how many scored
            page.get_by_text("4 scored, 0 failed", exact=False).first.wait_for(timeout=180_000)
            page.screenshot(path=str(ARTIFACTS / "fiftyone-run-notice.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "fiftyone-app-failure.png"))
            raise
        deadline = time.time() + 180
        while time.time() < deadline:
            app_dataset.reload()
            if "bpclip_score" in app_dataset.get_field_schema() and None not in app_dataset.values("bpclip_score"):
                break
            time.sleep(1)
        page.reload(wait_until="load")
        page.get_by_text("bpclip_score", exact=True).first.wait_for(timeout=60_000)
        row = page.locator("div", has=page.get_by_text("sample tags", exact=True)).last
        row.locator("svg").last.click()  # the chevron: expand the tag counts
        page.locator('input[placeholder*="filter by sample tag"]').first.click(timeout=30_000)  # lists the tags
        shown_tag = page.get_by_text("quality:", exact=False).first
        shown_tag.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "fiftyone-app.png"))
        browser.close()
    assert None not in app_dataset.values("bpclip_score"), "the operator did not score every sample"
    tags = app_dataset.count_sample_tags()
    assert sum(n for t, n in tags.items() if t.startswith("quality:")) == 4
