"""The report opens in real headless Chromium: not blank, no network request, every figure present."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from transferlab.experiments import get_experiment
from transferlab.report import write_store_report
from transferlab.sweep import run_sweep, spec_from_dict

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("chromium is required in CI (.ci/run installs it)")
    pytest.skip("chromium not installed (CI installs it through .ci/run)", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

def chromium(tmp: Path, url: str, *extra: str) -> str:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout

def page_requests(netlog: Path) -> list[str]:
    """URLs the *page* asked for (requests whose isolation key is the file:// page), excluding
    file: and data: URLs. Chromium's own background traffic has other isolation keys."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        if event["type"] == start_job and params.get("network_isolation_key", "").startswith("file://"):
            if not params["url"].startswith(("file:", "data:")):
                urls.append(params["url"])
    return urls

@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, set[str]]:
    tmp = tmp_path_factory.mktemp("report")
    spec = spec_from_dict({"experiment": "toy", "grid": {"mu": [0.0, 1.0, 2.0], "fail": ["none", "raise"]}})
    run_sweep(spec, tmp / "toy.db", executor="serial")
    html = write_store_report(tmp / "toy.db", tmp / "report.html")
    kind = get_experiment("toy")
    from transferlab.sweep import load_table, open_store

    with open_store(tmp / "toy.db") as st:
        names = set(kind.figures(kind.analyze(load_table(st)[1])))
    return html, names

def test_screenshot_is_not_blank(report, tmp_path):
    html, _ = report
    shot = tmp_path / "shot.png"
    chromium(tmp_path, html.as_uri(), f"--screenshot={shot}", "--window-size=1100,1400")
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    ink = (pixels.mean(axis=2) < 0.9).mean()
    assert ink > 0.02, f"only {ink:.2%} of the screenshot is not white"
    assert pixels.std() > 0.05

def test_every_figure_element_is_present(report, tmp_path):
    html, names = report
    dom = chromium(tmp_path, html.as_uri(), "--dump-dom")
    shown = set(re.findall(r'<figure class="tl-figure" data-name="([^"]+)"', dom))
    assert names and shown == names
    images = re.findall(r'<img alt="[^"]*" src="([^"]{0,40})', dom)
    assert len(images) == len(names) and all(src.startswith("data:image/png;base64,") for src in images)
    assert "Failed cells (3)" in dom and "RuntimeError: toy cell asked to fail" in dom
    assert "Provenance" in dom

def test_the_page_makes_no_network_request(report, tmp_path):
    html, _ = report
    netlog = tmp_path / "net.json"
    chromium(tmp_path, html.as_uri(), f"--log-net-log={netlog}", "--dump-dom")
    assert page_requests(netlog) == []
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html.read_text()), "external reference in HTML"

def test_the_request_detector_sees_a_page_request(tmp_path):
    """Positive control: a page that loads an image from a loopback server is caught."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        page = tmp_path / "probe.html"
        page.write_text(f'<html><body><img src="http://127.0.0.1:{port}/probe.png"></body></html>')
        netlog = tmp_path / "probe.json"
        chromium(tmp_path, page.as_uri(), f"--log-net-log={netlog}", "--dump-dom")
    finally:
        server.shutdown()
    assert page_requests(netlog) == [f"http://127.0.0.1:{port}/probe.png"]


FATE_THEORY = {"experiment": "fate", "params": {"d": 60, "mode": "theory", "ridge": 0.0},
               "grid": {"theta": {"linspace": [0.1, 1.0, 10], "unit": "pi/2"}, "gamma": [0.2, 0.4, 0.6, 0.8, 1.25, 1.5,
                                                                                       1.75, 2.0]}}
FATE_SIM = {"experiment": "fate", "params": {"d": 8, "instances": 3, "mode": "both", "max_steps": 300},
            "grid": {"theta": {"linspace": [0.25, 0.75, 2], "unit": "pi/2"}, "gamma": [0.5, 1.5]}}


@pytest.fixture(scope="module")
def fate_report(tmp_path_factory) -> Path:
    """A custom fate store (80 theory cells, 4 simulated cells), reported."""
    tmp = tmp_path_factory.mktemp("fate")
    for spec in (FATE_THEORY, FATE_SIM):
        run_sweep(spec_from_dict(spec), tmp / "fate.db", executor="serial")
    return write_store_report(tmp / "fate.db", tmp / "report.html")


def _page_height(tmp: Path, html: Path) -> int:
    """Height in CSS pixels of the rendered page: the last screenshot row that is not white."""
    shot = tmp / f"height-{len(list(tmp.glob('height-*')))}.png"
    chromium(tmp, html.as_uri(), f"--screenshot={shot}", "--window-size=1200,16000", "--hide-scrollbars")
    from matplotlib.image import imread

    ink = (imread(shot)[..., :3].min(axis=2) < 0.97).any(axis=1)
    return int(ink.nonzero()[0].max())


def test_fate_report_reads_like_a_figure_set(fate_report: Path, tmp_path: Path) -> None:
    """Every figure has a numbered caption in words; the theory-only figures stand apart, labelled; the
    long cells table is collapsed beside a CSV link; no "-0" anywhere."""
    dom = chromium(tmp_path, fate_report.as_uri(), "--dump-dom")
    figures = re.findall(r'<figure class="tl-figure" data-name="([^"]+)".*?<figcaption>(.*?)</figcaption>', dom, re.S)
    assert len(figures) >= 10
    for number, (name, caption) in enumerate(figures, start=1):
        text = re.sub(r"<[^>]+>", "", caption)
        assert text.startswith(f"Figure {number}.") and len(re.findall(r"[A-Za-z]{2,}", text)) >= 25, (name, text)
    theory_section = dom.index("<h2>Theory-only figures</h2>")
    for name in ("fate_ridge", "fate_finite_source", "fate_divergence"):
        assert dom.index(f'data-name="{name}"') > theory_section
        assert re.search(rf'data-name="{name}".*?<figcaption><strong>Figure \d+\.</strong> Theory only', dom, re.S)
    assert "simulated cells excluded (gradient descent did not converge)" in dom
    assert re.search(r"<details class=\"tl-table\"><summary>show all 80 rows</summary>", dom)
    assert 'download="cells_of_theory_sigma0.2_d60_ridge0.csv"' in dom
    assert ">-0<" not in dom


def test_collapsed_tables_keep_the_rendered_page_short(fate_report: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Screenshot check: the same report with every table inline is taller by at least the 80 cell rows."""
    from transferlab.report import html as report_html

    collapsed = _page_height(tmp_path, fate_report)
    monkeypatch.setattr(report_html, "MAX_INLINE_ROWS", 10**6)
    inline = write_store_report(fate_report.parent / "fate.db", tmp_path / "inline.html")
    assert _page_height(tmp_path, inline) > collapsed + 80 * 15
