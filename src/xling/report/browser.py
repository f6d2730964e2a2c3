"""A real headless browser (Chromium) looking at a report: what a reader's browser would show.

`page_facts` loads a page and reads back, after the load event, every image (loaded or not, its
size), every table (visible or not, its first header) and the headings; `screenshot` writes a PNG
of the whole page. Both need a Chromium-family browser: `chromium-headless-shell` (Debian's
package of that name), `chromium`, `google-chrome`, or the binary named by $XLING_BROWSER.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import XlingError
from ..fsio import make_dirs

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
              "chrome", "headless_shell")
INSTALL = ("apt-get install chromium-headless-shell (Debian, Ubuntu), or set XLING_BROWSER to a Chrome or "
           "Chromium binary")
MAX_HEIGHT = 16_000  # pixels: Chromium's screenshots stop being reliable beyond this


def find_browser() -> str | None:
    """The headless browser to use: $XLING_BROWSER, else the first of CANDIDATES on PATH."""
    chosen = os.environ.get("XLING_BROWSER")
    if chosen:
        return shutil.which(chosen) or (chosen if Path(chosen).is_file() else None)
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def require_browser() -> str:
    browser = find_browser()
    if browser is None:
        raise XlingError(f"no headless browser found for the screenshot: {INSTALL}")
    return browser


def _run(browser: str, *args: str, timeout: float = 60) -> str:
    flags = ["--headless", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
             "--no-first-run", "--disable-extensions"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    try:
        done = subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise XlingError(f"the browser {browser} did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise XlingError(f"the browser {browser} failed (exit {done.returncode}): {last}")
    return done.stdout


# Runs in the page after the load event (every image has loaded or failed by then) and leaves its
# findings in an attribute of <body>, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  const seen = (el) => { const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.display !== "none" && s.visibility !== "hidden"; };
  const facts = {
    images: [...document.images].map((i) => ({alt: i.alt, src: i.currentSrc.slice(0, 40), complete: i.complete,
      width: i.naturalWidth, height: i.naturalHeight, visible: seen(i)})),
    tables: [...document.querySelectorAll("table")].map((t) => ({head: [...t.querySelectorAll("th")].map(
      (h) => h.textContent.trim()), rows: t.tBodies.length ? t.tBodies[0].rows.length : 0, visible: seen(t)})),
    headings: [...document.querySelectorAll("h1, h2, h3")].map((h) => h.textContent.trim()),
    height: Math.ceil(document.documentElement.scrollHeight),
    width: Math.ceil(document.documentElement.scrollWidth),
  };
  document.body.setAttribute("data-xling-facts", JSON.stringify(facts));
});
</script>"""


def page_facts(page: str | Path, browser: str | None = None, width: int = 1100) -> dict:
    """What a browser shows of an HTML file: {"images": [{alt, src, complete, width, height,
    visible}], "tables": [{head, rows, visible}], "headings": [...], "height": pixels, "width": pixels (more
    than the window where something, say a wide table, sticks out to the right)}.

    The page is copied, with a probe script added, into a scratch file beside it (so that any
    relative links resolve as they would for the page itself) and loaded in a window `width` pixels wide."""
    page = Path(page).resolve()
    browser = browser or require_browser()
    text = page.read_text(encoding="utf-8")
    probed = text.replace("</body>", _PROBE + "</body>") if "</body>" in text else text + _PROBE
    with tempfile.NamedTemporaryFile("w", suffix=".html", prefix=".probe-", dir=page.parent, delete=False,
                                     encoding="utf-8") as f:
        f.write(probed)
    try:
        dom = _run(browser, f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
                   Path(f.name).as_uri())
    finally:
        os.unlink(f.name)
    found = re.search(r'data-xling-facts="([^"]*)"', dom)
    if not found:
        raise XlingError(f"the browser {browser} loaded {page} but its load event never came")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: str | Path, png: str | Path, width: int = 1100, browser: str | None = None) -> Path:
    """A PNG of the whole page (up to MAX_HEIGHT pixels tall), `width` CSS pixels wide or as wide as the
    page's widest content (a table of many columns is not cut off)."""
    page, png = Path(page).resolve(), Path(png).resolve()
    browser = browser or require_browser()
    facts = page_facts(page, browser, width)
    # the page is centred: every pixel added moves its left edge by half a pixel, so twice the overflow
    width += 2 * max(0, facts.get("width", width) - width)
    height = min(max(facts["height"], 600), MAX_HEIGHT)
    make_dirs(png.parent)
    tmp = png.with_name(f".tmp-{png.name}")
    _run(browser, f"--window-size={width},{height}", "--virtual-time-budget=10000", f"--screenshot={tmp}",
         page.as_uri())
    if not tmp.is_file():
        raise XlingError(f"the browser {browser} wrote no screenshot of {page}")
    os.replace(tmp, png)
    return png
