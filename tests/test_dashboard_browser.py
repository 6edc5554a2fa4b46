"""The dashboard in a real browser: headless Chromium renders TensorBoard's pages for a finished short run.

Skipped with its reason when Chromium is not installed, unless LIGHTNING_CNN_REQUIRE_BROWSER=1 (CI
installs it), where its absence fails. Screenshots are kept under the test's tmp folder.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import config_run_args, free_port, make_synthetic_mnist, run_cli

RUN = "quickstart/version_0"
STARTUP_SECONDS = 90
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
# Virtual time lets the page finish its requests and rendering before the DOM is dumped.
VIRTUAL_MILLISECONDS = 20000


def chromium() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    message = "headless Chromium is not installed (Debian: apt-get install chromium)"
    if os.environ.get("LIGHTNING_CNN_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory) -> Iterator[str]:
    """``tensorboard`` over one finished 1-epoch quickstart run, on a free loopback port."""
    browser = chromium()  # skip before training when there is no browser
    root = tmp_path_factory.mktemp("browser")
    data_dir = make_synthetic_mnist(root / "data")
    args = config_run_args("quickstart.yaml", data_dir, root / "logs", "--trainer.max_epochs", "1")
    result = run_cli("fit", *args, "--insight.time_budget", "1", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(root / "logs"), "--port", str(port)]
    server = subprocess.Popen([*command, "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                # The server loads event files in the background: wait until it serves the run's images too,
                # or a busy machine's page is drawn before the image cards exist.
                with urllib.request.urlopen(f"{url}/data/plugin/images/tags", timeout=5) as response:
                    if "train/inputs" in json.loads(response.read()).get(RUN, {}):
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not list {RUN} within {STARTUP_SECONDS} s")
            time.sleep(0.5)
        os.environ["LIGHTNING_CNN_TEST_BROWSER"] = browser
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


def render(url: str, screenshot: Path, ready: Callable[[str], bool], attempts: int = 4) -> str:
    """The page's DOM once ``ready`` says it is drawn (on a busy machine a load may end before the cards are
    drawn: loaded again, with more virtual time each time), and a screenshot."""
    for attempt in range(attempts):
        page = render_once(url, screenshot, VIRTUAL_MILLISECONDS * (attempt + 1))
        if ready(page):
            break
    return page


def shown_text(page: str) -> str:
    """The page's text as a reader sees it (an image card writes its title as "train" + "/inputs")."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).replace(" /", "/")


def render_once(url: str, screenshot: Path, virtual_milliseconds: int = VIRTUAL_MILLISECONDS) -> str:
    """The page's DOM after it rendered in headless Chromium, and a screenshot of it."""
    browser = os.environ["LIGHTNING_CNN_TEST_BROWSER"]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--virtual-time-budget={virtual_milliseconds}"]  # fmt: skip
    # --no-sandbox: Chromium refuses to start as root (CI containers) with its sandbox.
    dom = subprocess.run(
        [browser, *flags, "--window-size=1600,4000", "--dump-dom", url], capture_output=True, text=True, timeout=180
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run(
        [browser, *flags, "--window-size=1400,900", f"--screenshot={screenshot}", url], capture_output=True, timeout=180
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    return html.unescape(dom.stdout)


def test_scalars_view_shows_the_run_and_its_validation_accuracy_chart(dashboard_url, tmp_path):
    page = render(
        f"{dashboard_url}/?tagFilter={quote('val/acc')}#timeseries",
        tmp_path / "scalars.png",
        lambda page: 'title="val/acc_class/0"' in page,
    )
    assert RUN in page  # the run selector
    assert 'title="val/acc"' in page and 'title="val/acc_class/0"' in page  # chart cards, by tag
    assert "<canvas" in page or "<svg" in page  # a chart was drawn


def test_images_view_shows_every_image_kind(dashboard_url, tmp_path):
    tags = ("train/inputs", "val/misclassified", "val/confusion_matrix", "val/accuracy_by_class", "class_visualization")
    pattern = "|".join(tag.split("/")[-1] for tag in tags)
    page = render(
        f"{dashboard_url}/?tagFilter={quote(pattern)}#timeseries",
        tmp_path / "images.png",
        lambda page: all(f" {tag} " in shown_text(page) for tag in tags) and page.count("imageData") >= len(tags),
    )
    shown = shown_text(page)
    assert f"Tags matching filter {len(tags)} cards" in shown
    for tag in tags:
        assert f" {tag} " in shown, tag  # each card's title
    # The images themselves are on the page, one per card.
    assert len(re.findall(r'<img[^>]+src="data/plugin/timeseries/imageData', page)) == len(tags)
