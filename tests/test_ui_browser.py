"""What a person sees in the Prefect V2 UI, checked in headless Chromium against a real `prefect server start`.

A finished planner run shows its answer as an artifact; a paused run's Resume form has a
Decision field with nothing preselected, and Resume without a decision is refused. The
server is started on a port of its own with PREFECT_SERVER_API_PORT only (no --port, no
PREFECT_API_URL), as the README's custom-port setup says, so the UI must reach its API there.

Needs Chromium (Debian package `chromium`; .ci/run installs it). Screenshots go to
FOREMAN_UI_SHOTS (default: the test's tmp folder).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCENARIOS = Path(__file__).resolve().parent / "ui_scenarios.py"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium driven over the DevTools protocol (websockets, no driver to install)."""

    def __init__(self, shots: Path) -> None:
        from websockets.sync.client import connect

        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        self.profile = Path(tempfile.mkdtemp(prefix="foreman-chromium-"))
        self.shots = shots
        self.process = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                         "--remote-debugging-port=0", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.time() < deadline:
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=10).json() if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64_000_000, open_timeout=30)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == message_id:
                assert "error" not in message, message["error"]
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, needle: str, timeout_s: float = 60) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.5)
        raise AssertionError(f"{needle!r} is not on the page; it shows:\n{self.text()[:4000]}")

    def wait_js(self, expression: str, timeout_s: float = 60) -> Any:
        """The value of `expression` once it is truthy (the page renders as its data arrives)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"never true: {expression}; the page shows:\n{self.text()[:4000]}")

    def click(self, selector: str, text: str | None = None) -> None:
        """A real mouse click (Radix menus open on pointer events, not on element.click())."""
        where = self.js(f"""(() => {{
            const all = [...document.querySelectorAll({json.dumps(selector)})];
            const el = all.find(e => {json.dumps(text)} === null || (e.innerText || '').trim() === {json.dumps(text)}
                                      || e.getAttribute('aria-label') === {json.dumps(text)});
            if (!el) return null;
            el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""")
        assert where, f"nothing to click: {selector} {text!r}"
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=where[0], y=where[1], button="left", clickCount=1)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self.ws.close()
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


class UIServer:
    """`PREFECT_SERVER_API_PORT=P prefect server start`: the README's custom-port setup (UI and API on P)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.ui = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FOREMAN_"))}
        self.server_env = {**base, "PREFECT_HOME": str(tmp / "server"), "PREFECT_SERVER_API_PORT": str(self.port),
                           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.client_env = {**base, "PREFECT_HOME": str(tmp / "client"), "PREFECT_API_URL": f"{self.ui}/api",
                           "FOREMAN_HOME": str(tmp / "foreman"), "FOREMAN_APPROVAL_POLL_S": "1"}
        self.process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"],
                                        cwd=ROOT, env=self.server_env,
                                        stdout=(tmp / "server.log").open("w"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.http = httpx.Client(base_url=f"{self.ui}/api", timeout=30)

    def wait_healthy(self, timeout_s: float = 600) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, (self.tmp / "server.log").read_text()[-3000:]
            time.sleep(1)
        raise AssertionError("the Prefect server did not become healthy")

    def scenario(self, name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(SCENARIOS), name], cwd=ROOT, env=self.client_env,
                                stdout=subprocess.PIPE, stderr=(self.tmp / f"{name}.log").open("w"), text=True,
                                start_new_session=True)

    def state(self, run_id: str) -> str:
        return self.http.get(f"/flow_runs/{run_id}").json()["state"]["type"]

    def paused_run(self, timeout_s: float = 300) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            found = self.http.post("/flow_runs/filter", json={
                "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}).json()
            if found:
                return found[0]["id"]
            time.sleep(1)
        raise AssertionError("no run paused")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs the Debian package `chromium`")
        pytest.skip("needs Chromium (apt-get install -y chromium)")
    server = UIServer(tmp_path_factory.mktemp("ui"))
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Browser]:
    shots = Path(os.environ.get("FOREMAN_UI_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    chromium = Browser(shots)
    try:
        yield chromium
    finally:
        chromium.close()


def test_links_open_the_servers_default_ui(ui: UIServer) -> None:
    from foreman.prefect_ui import _detect

    base = _detect(ui.ui)
    assert (base.version, base.url) == ("v2", f"{ui.ui}/v2")


def test_a_finished_planner_run_shows_its_answer_in_the_v2_ui(ui: UIServer, browser: Browser) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ui_scenarios", SCENARIOS)
    scenarios = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenarios)
    answer_text = scenarios.ANSWER

    run = ui.scenario("planner")
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, (ui.tmp / "planner.log").read_text()[-4000:]
    run_id = out.split()[1]
    assert ui.state(run_id) == "COMPLETED"

    browser.open(f"{ui.ui}/v2/runs/flow-run/{run_id}?tab=Artifacts")
    page = browser.wait_for(answer_text[:60])  # the answer card, by its text
    assert "answer" in page and "Can't connect" not in page  # the UI reached its API on this port
    browser.screenshot("planner-run-artifacts")
    [answer] = ui.http.post("/artifacts/filter", json={"artifacts": {
        "flow_run_id": {"any_": [run_id]}, "key": {"any_": ["answer"]}}}).json()
    browser.open(f"{ui.ui}/v2/artifacts/artifact/{answer['id']}")
    page = browser.wait_for(answer_text)
    assert "What does the Q3 report recommend?" in page
    browser.screenshot("planner-answer-artifact")


def test_a_paused_runs_resume_form_asks_for_a_decision_with_none_preselected(ui: UIServer,
                                                                           browser: Browser) -> None:
    run = ui.scenario("paused")
    try:
        run_id = ui.paused_run()
        browser.open(f"{ui.ui}/v2/runs/flow-run/{run_id}")
        browser.wait_for("Paused")
        time.sleep(1)
        browser.click("button", "Open menu")
        browser.wait_for("Resume")
        browser.click("[role=menuitem]", "Resume")
        browser.wait_for("Resume Flow Run")
        dialog = browser.wait_for("Approve step delete")  # the form loads its schema and context
        assert "Decision" in dialog and "found 3 old logs" in dialog  # the context above the form
        chosen = browser.wait_js("""(() => {
            const box = document.querySelector('[role=dialog] [aria-label="Select Decision"]');
            return box ? box.innerText.trim() : null; })()""")
        assert chosen == "Select", chosen  # nothing preselected: no accidental approve or reject
        labels = browser.js("[...document.querySelectorAll('[role=dialog] label')].map(l => l.innerText.trim())")
        assert "Decision" in labels and "Decision (Optional)" not in labels, labels  # required
        browser.screenshot("paused-run-resume-form")

        browser.click("[role=dialog] button", "Resume")  # Submit without choosing
        browser.wait_for("'decision' is a required property")
        browser.screenshot("paused-run-resume-refused-without-decision")
        assert ui.state(run_id) == "PAUSED"

        resumed = ui.http.post(f"/flow_runs/{run_id}/resume", json={"run_input": {"decision": "approve"}}).json()
        assert resumed["status"] == "ACCEPT", resumed
        out, _ = run.communicate(timeout=300)
        assert "COMPLETED" in out, (ui.tmp / "paused.log").read_text()[-4000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
