"""The dashboard end to end, in a real headless Chromium.

A dashboard serves a slow run (a UDF that sleeps in each of 32 small partitions) on a
free port on 127.0.0.1, in this process. Chromium (Debian's ``chromium`` with its
``chromedriver``, driven by selenium) opens the page; the test presses the page's
buttons and reads what the page shows from the browser's own Bokeh document: the
progress text, and each image's data as it arrived in the browser. It checks that the
image fills in while the run progresses (NaN, i.e. blank, where nothing is computed),
that the final values equal numpy's, that a second tab shows the same run, and that
Stop stops it; that images keep square pixels on screen, colour bars name the result and
its unit, the page shows the frame rate, and the PNG button draws every plot into one
PNG. The first run is held after two partitions (a gate, no clock) until the page has
shown them. A screenshot is saved to the test's ``tmp_path`` and, when the
environment variable ``DETFLOW_TEST_ARTIFACTS`` names a folder, there too
(``.ci/run`` sets it to ``test-artifacts/``).

The test is skipped, saying what to install, only where Chromium or chromedriver
cannot be found (set ``DETFLOW_CHROMIUM`` / ``DETFLOW_CHROMEDRIVER`` to use others).
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from detflow.dashboard.server import Dashboard
from tests.dashboard.test_dashboard import wait_for
from tests.sinks.slow import Gate, scan, slow_graph

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--window-size=1400,1000")

# What the page shows, read from the browser's Bokeh document: every figure's image data
# (by the name of its pane: the channel key), and the texts of the HTML panes.
_READ_PAGE = """
const docs = window.Bokeh && window.Bokeh.documents;
if (!docs || docs.length === 0) return null;
const out = {images: {}, texts: [], colorbars: []};
for (const m of docs[0].all_models) {
  const type = m.constructor.__name__;
  if (type === "ColorBar") out.colorbars.push(m.title);
  if (type === "Figure" && m.name) {
    const r = m.renderers.find((r) => r.glyph && r.glyph.constructor.__name__ === "Image");
    if (r && r.data_source.data.image) {
      const img = r.data_source.data.image[0];
      out.images[m.name] = {shape: Array.from(img.shape),
                            values: Array.from(img, (v) => (Number.isNaN(v) ? null : v))};
    }
  } else if (type === "HTML" && typeof m.text === "string") {
    out.texts.push(m.text);
  }
}
return out;
"""

# The size on screen of each figure's frame (the image area), by figure name.
_READ_FRAMES = """
const out = {};
for (const m of window.Bokeh.documents[0].all_models) {
  if (m.constructor.__name__ === "Figure" && m.name) {
    const view = window.Bokeh.index.find_one(m);
    if (view) out[m.name] = [view.frame.bbox.width, view.frame.bbox.height];
  }
}
return out;
"""

# Click the button labelled arguments[0], wherever it sits in Panel's shadow roots; true if it
# was there and enabled (a tab that has not caught up with the run yet may still show it disabled).
_CLICK = """
const label = arguments[0];
function find(root) {
  for (const el of root.querySelectorAll("*")) {
    if (el.tagName === "BUTTON" && el.textContent.trim() === label) return el;
    if (el.shadowRoot) { const hit = find(el.shadowRoot); if (hit) return hit; }
  }
  return null;
}
const button = find(document);
if (!button || button.disabled) return false;
button.click();
return true;
"""


def _which(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser():
    chromium = _which("DETFLOW_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver = _which("DETFLOW_CHROMEDRIVER", "chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None)
        pytest.skip(f"headless-browser test skipped: no {missing} found; install them with "
                    "'apt-get install chromium chromium-driver' (or set DETFLOW_CHROMIUM / DETFLOW_CHROMEDRIVER)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="detflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    drv = webdriver.Chrome(options=options, service=Service(driver))
    drv.set_page_load_timeout(30)
    drv.set_script_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _page(drv) -> dict | None:
    return drv.execute_script(_READ_PAGE)


def _progress(page: dict) -> tuple[int, int] | None:
    import re

    for text in page["texts"]:
        if m := re.search(r"(\d+) / (\d+) frames", text):
            return int(m.group(1)), int(m.group(2))
    return None


def _status(page: dict) -> str:
    return next((t for t in page["texts"] if "run " in t or "not started" in t), "")


def _image(page: dict, key: str) -> np.ndarray:
    img = page["images"][key]
    values = np.array([np.nan if v is None else v for v in img["values"]], dtype=np.float64)
    return values.reshape(img["shape"])


def _save_screenshot(drv, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert drv.save_screenshot(str(path)), "the browser could not take a screenshot"
    folder = os.environ.get("DETFLOW_TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        shutil.copy(path, Path(folder) / name)
    return path


def test_dashboard_fills_in_live_and_shows_the_final_values(browser, tmp_path) -> None:
    data = scan((16, 16, 8, 8))
    # shut: the first run merges partitions 0 and 1 and waits until the page has shown them;
    # shut again before Re-run, so the second run is still going when Stop comes
    gate = Gate(open=False)
    dashboard = Dashboard(slow_graph(data, delay=0.1, gate=gate, hold_from=2), executor="inline",
                          refresh_ms=100, max_rate=10)
    ctl = dashboard.controller
    server = dashboard.serve(port=0, show=False, threaded=True, autostart=False)
    try:
        browser.get(server.url)
        page = wait_for(lambda: (p := _page(browser)) and "slow/intensity" in p["images"] and _progress(p) and p,
                        what="the dashboard page to load")
        assert set(page["images"]) == {"latest_frame/intensity", "sum/intensity", "slow/intensity"}
        assert _progress(page) == (0, 256) and "not started" in _status(page)
        assert np.isnan(_image(page, "slow/intensity")).all()  # nothing computed: blank, not zeros
        # the graph's text reaches the page as text: its "<array ...>" must not be taken for an HTML tag
        assert any("data=&lt;array (16, 16, 8, 8) uint16&gt;" in html.unescape(t) for t in page["texts"])

        wait_for(lambda: browser.execute_script(_CLICK, "Start"), what="an enabled Start button")
        wait_for(lambda: ctl.status != "idle", what="the Start button to start the run")
        # the run is held after two partitions: the page shows them, and nothing more, mid-run
        held = wait_for(lambda: (p := _page(browser)) and _progress(p) == (16, 256)
                        and int(np.isfinite(_image(p, "slow/intensity")).sum()) == 16 and p,
                        what="the page to show the first two partitions while the run is held")
        assert ctl.status == "running" and "run 1: running" in _status(held)
        seen = [(16, 16)]  # (frames done, pixels shown) as the page showed them while the run was going
        gate.open()
        deadline = time.monotonic() + 60
        while ctl.status == "running" and time.monotonic() < deadline:
            page = _page(browser)
            progress = _progress(page)
            shown = int(np.isfinite(_image(page, "slow/intensity")).sum())
            if progress and 0 < progress[0] < 256 and 0 < shown < 256 and (progress[0], shown) not in seen:
                seen.append((progress[0], shown))
            time.sleep(0.05)
        assert ctl.wait(timeout=60) == "finished"
        assert [s for _, s in seen] == sorted(s for _, s in seen), seen  # the image only fills in

        page = wait_for(lambda: (p := _page(browser)) and _progress(p) == (256, 256)
                        and np.isfinite(_image(p, "slow/intensity")).all() and p,
                        what="the page to show the final result")
        assert "run 1: finished" in _status(page)
        expected = {
            "slow/intensity": data.sum(axis=(2, 3), dtype=np.float64),
            "sum/intensity": data.sum(axis=(0, 1), dtype=np.float64),
            "latest_frame/intensity": data[-1, -1].astype(np.float64),  # inline: partitions merge in order
        }
        server_images = ctl.snapshot().images
        for key, want in expected.items():
            np.testing.assert_allclose(_image(page, key), want, rtol=1e-6, err_msg=key)
            np.testing.assert_allclose(server_images[key].data, want, rtol=1e-6, err_msg=key)
        shot = _save_screenshot(browser, tmp_path, "dashboard-final.png")
        assert shot.stat().st_size > 10_000
        # square pixels: each image's frame is as many screen pixels high per row as wide per column
        frames = browser.execute_script(_READ_FRAMES)
        for key, want in expected.items():
            width, height = frames[key]
            assert abs(width / height - want.shape[1] / want.shape[0]) < 0.02, (key, width, height)
        # colour bars name the result and its unit; the page shows the frame rate
        assert page["colorbars"].count("intensity [counts]") == 3, page["colorbars"]
        assert any(re.search(r"256 / 256 frames, [\d,]+ frames/s", t) for t in page["texts"]), page["texts"]
        # the PNG button draws the whole view into one PNG
        assert browser.execute_script(_CLICK, "PNG"), "no PNG button on the page"
        url = wait_for(lambda: browser.execute_script("return window.detflowSnapshot || null"),
                       what="the PNG button to make a snapshot")
        png = base64.b64decode(url.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        png_w, png_h = struct.unpack(">II", png[16:24])
        assert png_w > 400 and png_h > 200, (png_w, png_h)  # the plots side by side, not one of them
        (tmp_path / "dashboard-snapshot.png").write_bytes(png)
        folder = os.environ.get("DETFLOW_TEST_ARTIFACTS")
        if folder:
            shutil.copy(tmp_path / "dashboard-snapshot.png", Path(folder) / "dashboard-snapshot.png")

        # a second tab watches the same run
        first = browser.current_window_handle
        browser.switch_to.new_window("tab")
        browser.get(server.url)
        other = wait_for(lambda: (p := _page(browser)) and _progress(p) == (256, 256)
                         and "slow/intensity" in p["images"] and np.isfinite(_image(p, "slow/intensity")).all()
                         and p, what="the second tab to show the run")
        np.testing.assert_allclose(_image(other, "slow/intensity"), expected["slow/intensity"])

        # Re-run from the second tab, Stop from the first: both see the one run
        gate.shut()  # the second run merges partitions 0 and 1, then waits in partition 2
        wait_for(lambda: browser.execute_script(_CLICK, "Re-run"), what="an enabled Re-run button")
        wait_for(lambda: ctl.snapshot().run_id == 2 and ctl.frames_done >= 16, what="the second run to progress")
        browser.close()
        browser.switch_to.window(first)
        gate.open_when(lambda: ctl.status == "stopping")
        # the first tab was in the background: its Stop is enabled once it has caught up with run 2
        wait_for(lambda: browser.execute_script(_CLICK, "Stop"), what="an enabled Stop button")
        assert ctl.wait(timeout=60) == "stopped"
        # the stopped run shows every partition merged before the stop (texts and image may arrive apart)
        page = wait_for(lambda: (p := _page(browser)) and "run 2: stopped" in _status(p)
                        and int(np.isfinite(_image(p, "slow/intensity")).sum()) == _progress(p)[0] and p,
                        what="the page to show the stopped run")
        assert 16 <= _progress(page)[0] == ctl.frames_done < 256
        _save_screenshot(browser, tmp_path, "dashboard-stopped.png")
    finally:
        gate.open()  # a failed check above must not leave the run held
        server.stop(timeout=30)
