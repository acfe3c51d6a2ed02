"""One smoke test: evalkit's Explorer in a real JupyterLab page, driven in headless Chromium.

Widget callbacks are tested without a browser in tests/report/test_widgets.py; this test checks the part those
cannot: that the widgets render in JupyterLab's front end (the ipywidgets lab extension from the
pip wheels), that the images arrive as real decodable pictures, and that a change made in the page
goes to the kernel and the kernel's answer comes back to the page.

Needs Debian's ``chromium`` (/usr/bin/chromium, or EVALKIT_CHROMIUM) and the Python ``playwright``
package (the ``browser`` extra); Playwright never downloads a browser here. Without either the test
is skipped with the reason. See docs/browser-test.md for how to run it and how long it takes.

Nothing leaves the machine: JupyterLab binds 127.0.0.1 on a port the OS picks, with a generated
token, news and update checks off and its config, data and runtime dirs in tmp_path; Chromium runs
with background networking off, a fresh profile, and a host resolver that resolves nothing but
loopback. Every request the page makes to another host is recorded and fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nbformat
import pytest

from tests.plugins import synthetic as S
from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SERVER_START_S = 60
PAGE_READY_S = 60
KERNEL_IDLE_S = 60
RUN_ALL_S = 120  # importing evalkit (pandas, scikit-image) in a fresh kernel on a busy 2-core machine
INTERACTION_S = 30
NOTEBOOK = "explorer.ipynb"
WIDGETS_PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"  # ipywidgets' lab extension (jupyterlab_widgets)
COLOUR_TOLERANCE = 10  # JPEG thumbnails of flat colours; neighbouring cases differ by 20 in green

# --- what the test needs: skip (with the reason) when the machine does not have it ---------------------

sync_api = require_browser()
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")


# --- JupyterLab as a subprocess ------------------------------------------------------------------------


def _tail(log_path: Path, n_chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-n_chars:]


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT/
    token: str
    log_path: Path


def _lab_env(home: Path) -> dict[str, str]:
    """An environment where JupyterLab reads and writes only tmp dirs, but still finds the lab
    extensions and kernel spec installed in this Python's prefix (sys.prefix/share/jupyter stays on
    the data path whatever JUPYTER_DATA_DIR says)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
    dirs = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "ipython",
    }
    for var, name in dirs.items():
        (home / name).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / name)
    # no "Would you like to get notified about official Jupyter news?" toast, and no fetch if clicked
    notification = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [env.get("PYTHONPATH")])])
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["TQDM_DISABLE"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def _server_info(runtime_dir: Path, pid: int) -> dict | None:
    """The server writes jpserver-PID.json once it listens; with port 0 this is where the port is."""
    path = runtime_dir / f"jpserver-{pid}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; whatever is left of its process tree (kernels
    run in their own sessions) is killed after a bound."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    _gone, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@contextlib.contextmanager
def jupyter_lab(root_dir: Path, home: Path) -> Iterator[LabServer]:
    """Start ``python -m jupyterlab`` on 127.0.0.1 (port 0), wait until its API answers, stop it after."""
    env = _lab_env(home)
    token = secrets.token_hex(24)
    log_path = home / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.password=",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells by command, not by menu clicks
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # the default 'pypi' manager would query PyPI when opened
        "--ServerApp.terminals_enabled=False",
    ]
    if os.geteuid() == 0:  # CI and these machines run as root
        cmd.append("--allow-root")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server: LabServer | None = None
    try:
        deadline = time.monotonic() + SERVER_START_S
        with httpx.Client(timeout=5, trust_env=False) as client:
            while server is None:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{_tail(log_path)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{_tail(log_path)}")
                info = _server_info(Path(env["JUPYTER_RUNTIME_DIR"]), proc.pid)
                if info is None:
                    time.sleep(0.2)  # waiting for the server to write its runtime file
                    continue
                url = f"http://127.0.0.1:{info['port']}/"
                try:
                    ok = client.get(url + "api/status", headers={"Authorization": f"token {token}"}).status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok:
                    server = LabServer(url, token, log_path)
                else:
                    time.sleep(0.2)
        yield server
    finally:
        _stop(proc)


# --- the notebook ------------------------------------------------------------------------------------


def write_explorer_notebook(path: Path, workspace: Path, run_id: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from evalkit.store import Workspace\n"
            "from evalkit.report.widgets import Explorer\n"
            f"explorer = Explorer(Workspace({str(workspace)!r}, create=False), {run_id!r})"
        ),
        nbformat.v4.new_code_cell("explorer.widget"),
    ]
    nbformat.write(nb, str(path))


# --- reading the page --------------------------------------------------------------------------------

# The centre pixel of each model's image in the Explorer grid (tiles are the grid's direct children:
# a title <b>, the image, the caption, the enlarge button), or null while an image is not decoded.
TILE_COLOURS_JS = """
() => {
  const out = {};
  for (const tile of document.querySelectorAll('.jp-OutputArea .widget-gridbox > .widget-vbox')) {
    const title = tile.querySelector('.widget-html-content b');
    const img = tile.querySelector('img');
    if (!title || !img) continue;
    if (!img.complete || img.naturalWidth === 0) { out[title.textContent] = null; continue; }
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(img.naturalWidth >> 1, img.naturalHeight >> 1, 1, 1).data;
    out[title.textContent] = [d[0], d[1], d[2]];
  }
  return out;
}
"""

KERNEL_IDLE_JS = """
(path) => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(w && w.context && w.context.path === path && kernel && kernel.connectionStatus === 'connected'
            && kernel.status === 'idle');
}
"""

# Done running when a widget view is in an output, or failed when a cell's output is an error
# (read from the notebook model: in the DOM a traceback looks like any stderr text).
WIDGET_OR_ERROR_JS = """
() => {
  if (document.querySelector('.jp-OutputArea-output .jupyter-widgets')) return {widget: true};
  const notebook = window.jupyterapp.shell.currentWidget.content.model;
  for (const cell of notebook.cells) {
    if (cell.type !== 'code') continue;
    for (const o of cell.outputs.toJSON()) {
      if (o.output_type === 'error') return {error: `${o.ename}: ${o.evalue}`};
    }
  }
  return null;
}
"""


def _close(a: list[int] | None, b: tuple[int, int, int]) -> bool:
    return a is not None and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= COLOUR_TOLERANCE


def wait_for_colours(page, expected: dict[str, tuple[int, int, int] | None], timeout_s: float) -> dict:
    """Wait until every tile shows the expected colour (None: no image shown); return what is shown."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = page.evaluate(TILE_COLOURS_JS)
        if all((shown.get(m) is None) if rgb is None else _close(shown.get(m), rgb) for m, rgb in expected.items()):
            return shown
        if time.monotonic() > deadline:
            pytest.fail(
                f"the Explorer's images did not show the expected outputs within {timeout_s} s:\n"
                f"expected {expected}\nshown    {shown}"
            )
        page.wait_for_timeout(100)  # re-read the decoded pixels; a kernel round trip is in flight


# --- the test ----------------------------------------------------------------------------------------


def test_explorer_renders_and_reacts_in_jupyterlab(synthetic_workspace, tmp_path):
    expect = sync_api.expect
    root = tmp_path / "lab-root"
    root.mkdir()
    write_explorer_notebook(root / NOTEBOOK, synthetic_workspace.path, S.RUN_ID)
    synthetic_workspace.ws.close()  # the kernel opens the workspace itself

    outside: list[str] = []  # requests to any host but the server's
    page_errors: list[str] = []
    with jupyter_lab(root, tmp_path / "jupyter-home") as lab, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
            timeout=PAGE_READY_S * 1000,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(INTERACTION_S * 1000)  # clicks, selects, evaluates
            server_netloc = urlsplit(lab.url).netloc

            def record_outside(request) -> None:
                url = urlsplit(request.url)
                if url.scheme in ("http", "https", "ws", "wss") and url.netloc != server_netloc:
                    outside.append(request.url)

            page.on("request", record_outside)
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            page.goto(f"{lab.url}lab/tree/{NOTEBOOK}?token={lab.token}", timeout=PAGE_READY_S * 1000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=PAGE_READY_S * 1000)
            if not page.evaluate(f"() => window.jupyterapp.hasPlugin({WIDGETS_PLUGIN!r})"):
                pytest.fail(
                    f"JupyterLab did not load {WIDGETS_PLUGIN}: is jupyterlab_widgets installed in "
                    f"{sys.prefix} (its share/jupyter/labextensions is what the isolated server sees)?"
                )
            page.wait_for_function(KERNEL_IDLE_JS, arg=NOTEBOOK, timeout=KERNEL_IDLE_S * 1000, polling=200)

            # not awaited: the waits below bound the run
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            ran = page.wait_for_function(WIDGET_OR_ERROR_JS, timeout=RUN_ALL_S * 1000, polling=200).json_value()
            if "error" in ran:
                pytest.fail(f"a cell raised in the kernel: {ran['error']}")
            dropdown = page.locator(".jp-OutputArea .widget-dropdown")
            case_select = dropdown.filter(has=page.locator("label", has_text="case")).locator("select")
            expect(case_select).to_have_count(1, timeout=RUN_ALL_S * 1000)
            # operation, category, case, before/after
            expect(dropdown.locator("select")).to_have_count(4, timeout=RUN_ALL_S * 1000)

            # the case dropdown lists every case of the run, in the run's order, and shows g1
            options = case_select.evaluate("s => Array.from(s.options).map(o => o.value)")
            assert [o.split(" ")[0] for o in options] == S.GENERAL_CASES + S.ERASE_CASES, options
            assert case_select.evaluate("s => s.selectedIndex") == 0

            # every model's image is a decoded picture of that model's output for g1 (colours are per call)
            shown = wait_for_colours(page, {m: S.output_colour(m, "g1") for m in S.MODELS}, RUN_ALL_S)
            assert set(shown) == set(S.MODELS) | {"source"}
            assert _close(shown["source"], S.source_colour("g1")), shown["source"]
            prompt = page.locator(".jp-OutputArea .widget-html-content", has_text="make case")
            expect(prompt).to_contain_text("make case g1 bluer", timeout=INTERACTION_S * 1000)
            page.screenshot(path=str(tmp_path / "explorer-g1.png"), full_page=True)

            # a case picked in the page reaches the kernel, whose callback sends back new images and captions
            case_select.select_option(value=options[2])  # g3: delta timed out on it
            expect(prompt).to_contain_text("make case g3 bluer", timeout=INTERACTION_S * 1000)
            wait_for_colours(
                page,
                {
                    **{m: S.output_colour(m, "g3") for m in S.MODELS if m != "delta"},
                    "delta": None,
                    "source": S.source_colour("g3"),
                },
                INTERACTION_S,
            )
            delta_tile = page.locator(".jp-OutputArea .widget-gridbox > .widget-vbox").filter(
                has=page.locator("b", has_text="delta")
            )
            expect(delta_tile).to_contain_text("timeout on g3", timeout=INTERACTION_S * 1000)
            expect(delta_tile.locator("button", has_text="enlarge")).to_be_disabled(timeout=INTERACTION_S * 1000)

            # a button click runs its Python handler: alpha's full-size output (64×48 px, not a thumbnail)
            alpha_tile = page.locator(".jp-OutputArea .widget-gridbox > .widget-vbox").filter(
                has=page.locator("b", has_text="alpha")
            )
            alpha_tile.locator("button", has_text="enlarge").click()
            expect(page.locator(".jp-OutputArea .widget-html-content", has_text="(full size)")).to_contain_text(
                "alpha on g3", timeout=INTERACTION_S * 1000
            )
            enlarged = page.locator(".jp-OutputArea .widget-vbox > img.widget-image").last
            expect(enlarged).to_have_js_property("naturalWidth", 64, timeout=INTERACTION_S * 1000)

            # the operation filter rebuilds the case dropdown's options from Python
            dropdown.filter(has=page.locator("label", has_text="operation")).locator("select").select_option(
                value="erase"
            )
            expect(case_select.locator("option")).to_have_count(len(S.ERASE_CASES), timeout=INTERACTION_S * 1000)
            expect(prompt).to_contain_text("make case e1 disappear", timeout=INTERACTION_S * 1000)
            wait_for_colours(
                page,
                {
                    "alpha": S.output_colour("alpha", "e1"),
                    "base": S.output_colour("base", "e1"),
                    "beta": None,
                    "source": S.source_colour("e1"),
                },
                INTERACTION_S,
            )
            page.screenshot(path=str(tmp_path / "explorer-erase.png"), full_page=True)
        except (Exception, pytest.fail.Exception):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"JupyterLab log (tail):\n{_tail(lab.log_path)}\nscreenshots in {tmp_path}")
            raise
        finally:
            context.close()
            shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)  # ~10 MB; screenshots stay

    assert not outside, f"the page asked hosts other than the local server: {outside}"
    assert not page_errors, f"uncaught errors in the page: {page_errors}"
