"""End to end: the FiftyOne App server on 127.0.0.1, driven by headless Chromium (Playwright
with the Debian browser) on the example photos: a form that cannot run says why; in one App
session the grid button runs the operator, the worst photos come first with their tags, "Sort
by" offers the score, another model's run into the same field is refused in the form, and the
runs operator lists and deletes the run. The screenshots (docs/images/fiftyone-*.png) are
written to test-artifacts/."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fiftyone as fo
import pytest

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


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
PHOTOS = {  # real photos, two of them damaged: photo -> its reference
    "astronaut.jpg": "astronaut.jpg", "astronaut_blurred.jpg": "astronaut.jpg", "chelsea.jpg": "chelsea.jpg",
    "coffee.jpg": "coffee.jpg", "coffee_jpeg_q5.jpg": "coffee.jpg", "rocket.jpg": "rocket.jpg",
}  # fmt: skip


@pytest.fixture
def app_dataset():
    """The example photos (with a ``reference`` path field), as a persistent dataset the App server sees."""
    name = "bpclip-app-e2e"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    ds.add_samples(
        [fo.Sample(filepath=str(EXAMPLES / photo), reference=str(EXAMPLES / ref)) for photo, ref in PHOTOS.items()]
    )
    yield ds
    ds.delete()


def _open_dataset(playwright, url: str, dataset_name: str):
    """Chromium on the dataset's page: (browser, page)."""
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
    return browser, page


def _browse_to(page, label: str, ready: str) -> None:
    """Open an operator's form from the operator browser; waits for the text ``ready``."""
    page.locator('[data-cy="action-browse-operations"]').first.click(timeout=30_000)
    page.locator('[data-cy="operators-browser-search"]').fill(label)
    page.get_by_text(label).first.click(timeout=30_000)
    page.get_by_text(ready).first.wait_for(timeout=30_000)


def _open_operator(playwright, url: str, dataset_name: str):
    """Chromium on the dataset's page with the BPCLIP operator's form open: (browser, page)."""
    browser, page = _open_dataset(playwright, url, dataset_name)
    _browse_to(page, "BPCLIP: compute image quality", "Quality bands")
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


def _wait_for_scores(dataset, field: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        dataset.reload()
        if field in dataset.get_field_schema() and None not in dataset.values(field):
            return
        time.sleep(1)


def _notified(page, text: str, timeout: int = 180_000) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)


GRID_BUTTON = '[data-item-id="@bpclip/quality/compute_quality"]'  # the operator's button in the grid's actions


def test_the_app_runs_sorts_shows_tags_refuses_lists_and_deletes(app_dataset, app_server, tmp_path):
    """One App session: the grid button opens the form; a run shows the worst photos first with
    their tags; "Sort by" offers the score; a run with another checkpoint into the same field is
    refused in the form; the runs operator lists the run and deletes it."""
    from playwright.sync_api import sync_playwright

    from bpclip_core.weights.checkpoint import init_checkpoint

    install_plugin()
    ARTIFACTS.mkdir(exist_ok=True)
    other = init_checkpoint("tiny", "nr", tmp_path / "other-nr.safetensors", random=True)
    with sync_playwright() as playwright:
        browser, page = _open_dataset(playwright, app_server, app_dataset.name)
        try:
            # the grid's "BPCLIP quality" button opens the form
            page.locator(GRID_BUTTON).first.click(timeout=60_000)
            page.get_by_text("Quality bands").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "fiftyone-operator-form.png"))
            page.get_by_role("button", name="Execute").click(timeout=60_000)
            _notified(page, "6 scored, 0 failed")  # which model, how many scored
            page.screenshot(path=str(ARTIFACTS / "fiftyone-run-notice.png"))
            page.get_by_role("button", name="Done").click(timeout=30_000)  # close the progress dialog
            _wait_for_scores(app_dataset, "bpclip_score")
            # the worst photo first, its tags shown without ticking "sample tags"
            page.get_by_text("quality:low", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("adjective:blocky", exact=False).first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "fiftyone-app.png"))
            # "Sort by" offers the indexed score field
            page.locator('input[placeholder="Sort by"]').first.click(timeout=30_000)
            page.get_by_text("bpclip_score", exact=True).last.wait_for(timeout=30_000)
            page.keyboard.press("Escape")
            # another checkpoint into the same field: refused in the form, with the reason
            page.locator(GRID_BUTTON).first.click(timeout=30_000)
            page.get_by_text("Quality bands").first.wait_for(timeout=30_000)
            page.locator("xpath=//p[starts-with(., 'Path or cache name')]/following::input[1]").fill(str(other))
            _notified(page, "holds 6 scores of another model", timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "fiftyone-refusal.png"))
            page.keyboard.press("Escape")
            # the runs operator lists the run and deletes it
            page.reload(wait_until="load")
            page.locator('[data-cy="action-browse-operations"]').first.wait_for(timeout=90_000)
            _browse_to(page, "BPCLIP: list or delete quality runs", "Run to delete")
            page.get_by_text("bpclip-nr", exact=False).first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "fiftyone-runs.png"))
            page.get_by_role("combobox").last.click(timeout=30_000)
            page.get_by_role("option", name="bpclip_score").click(timeout=30_000)
            page.get_by_role("button", name="Execute").click(timeout=30_000)
            _notified(page, "deleted run 'bpclip_score'", timeout=60_000)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "fiftyone-app-failure.png"))
            (ARTIFACTS / "fiftyone-app-failure.html").write_text(page.content())
            app_dataset.reload()
            if "bpclip_score_error" in app_dataset.get_field_schema():  # why samples failed, if they did
                print(dict(zip(app_dataset.values("filepath"), app_dataset.values("bpclip_score_error"))))
            raise
        finally:
            browser.close()
    app_dataset.reload()
    assert "bpclip_score" not in app_dataset.get_field_schema() and not app_dataset.count_sample_tags()
