"""The reviewer's view, in a real browser: `python run.py dashboard` starts the local ZenML server,
a tiny pipeline runs through it twice (the second is compared with the first, now production), and headless Chromium (Debian's chromium + chromium-driver, driven
by selenium) opens the run's page: the run and its DAG render, and the HTML reports (comparison with
production, gate decision) render as visualizations. Screenshots are kept.

Marked `browser` and deselected by default (it needs Chromium and takes a few minutes): run it with
`make test-browser` (installs chromium + selenium) or `pytest -m browser tests/test_dashboard_browser.py`.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN_NAME = "browser-run"
pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


def _browser_or_skip():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed; `make test-browser` installs them "
            "(apt-get install -y chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -c constraints.txt -e '.[browser]'")
    return chromium, chromedriver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory) -> Path:
    where = os.environ.get("FOUNDRY_BROWSER_ARTIFACTS")
    path = Path(where).resolve() if where else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    _browser_or_skip()
    state = tmp_path_factory.mktemp("browser-state")
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("ZENML_CONFIG_PATH", None)

    def cli(*args, timeout_s=900):
        return subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    port = free_port()
    started = cli("dashboard", "--port", str(port))
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    assert url in started.stdout and "python run.py dashboard --stop" in started.stdout
    try:
        yield url, cli
    finally:
        stopped = cli("dashboard", "--stop")
        assert stopped.returncode == 0, stopped.stderr[-2000:]


@pytest.fixture(scope="module")
def pipeline_run(dashboard, tiny_llama_hf_dir, tmp_path_factory):
    url, cli = dashboard
    from tests.test_rebuild_cache import tiny_config

    config = tiny_config({"kind": "hf_dir", "path": str(tiny_llama_hf_dir)})
    config["model"]["name"] = "tiny-browser"
    path = tmp_path_factory.mktemp("browser-config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    for run_name in (f"{RUN_NAME}-first", RUN_NAME):  # the second is compared with the first (production)
        result = cli("--config", str(path), "--run-name", run_name)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]  # all gates off: promoted
    with urllib.request.urlopen(f"{url}/api/v1/runs?name={RUN_NAME}", timeout=30) as response:
        runs = json.load(response)["items"]
    assert len(runs) == 1, "the run was recorded through the dashboard's server"
    return runs[0]["id"]


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


def _wait_text(driver, text: str, timeout_s: float = 90):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout_s).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text)


def _open_visualization(driver, artifact: str) -> str:
    """Click the artifact in the DAG, open its Visualization tab, load the preview; the rendered text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_elements(By.XPATH, f"//*[text()='{artifact}']")[0].click()
    tab = WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='Visualization']")
    )
    tab[-1].click()
    load = WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.XPATH, "//button[normalize-space(.)='Load Preview']")
    )
    load[0].click()
    frames = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))
    driver.switch_to.frame(frames[-1])
    try:
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").text.strip())
        return driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.switch_to.default_content()


def test_run_page_renders_the_run_dag_and_html_reports(dashboard, pipeline_run, browser, artifacts_dir):
    url, _ = dashboard
    browser.get(f"{url}/projects/default/runs/{pipeline_run}")
    _wait_text(browser, RUN_NAME)
    for step in (
        "resolve_source",
        "calibrate_checkpoint",
        "build_engine",
        "compare_with_production",
        "gate_and_promote",
    ):
        _wait_text(browser, step)
    browser.save_screenshot(str(artifacts_dir / "run-dag.png"))

    comparison = _open_visualization(browser, "comparison_report")
    assert "tiny-browser: this run (MLflow version 2) vs production (MLflow version 1)" in comparison
    assert "perplexity_ratio (gate)" in comparison and "Δ %" in comparison
    assert "Nothing is in production yet" not in comparison
    browser.save_screenshot(str(artifacts_dir / "comparison-report.png"))

    browser.get(f"{url}/projects/default/runs/{pipeline_run}")
    _wait_text(browser, "gate_report")
    gate = _open_visualization(browser, "gate_report")
    assert "PROMOTED" in gate.upper()
    browser.save_screenshot(str(artifacts_dir / "gate-report.png"))
