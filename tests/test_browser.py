"""A generated report as a reader sees it: opened in a real headless browser (Chromium), alone,
with every figure loaded and the claims table visible; `xling report --screenshot`."""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from test_study import completed_study, tiny_study_dict, write_study
from xling.cli import main
from xling.report.browser import INSTALL, find_browser, page_facts

BROWSER = find_browser()
if BROWSER is None and os.environ.get("CI"):  # CI installs one (.ci/run): there this test must run
    raise RuntimeError(f"CI needs a headless browser for tests/test_browser.py: {INSTALL}")
needs_browser = pytest.mark.skipif(BROWSER is None, reason=f"no headless browser: {INSTALL}")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_corpus_dir):
    """The tiny study's report with its screenshot (`xling report --screenshot`), written once here."""
    _, root = completed_study(tmp_path_factory, tiny_corpus_dir)
    out = tmp_path_factory.mktemp("browser-report")
    path = write_study(out / "tiny.yaml", tiny_study_dict(tiny_corpus_dir))
    assert main(["report", str(path), "--root", str(root), "--out", str(out), "--screenshot"]) == 0
    return out


@needs_browser
def test_the_report_opens_alone_in_a_browser_with_every_figure_and_the_claims(report_dir, tmp_path):
    alone = tmp_path / "mailed"  # report.html without the files beside it: it must not need them
    alone.mkdir()
    shutil.copy(report_dir / "report.html", alone / "report.html")
    facts = page_facts(alone / "report.html")
    figures = sorted(p.name for p in report_dir.glob("*.png") if p.name != "report.png")
    assert len(facts["images"]) == len(figures) == 3
    for image in facts["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
        assert image["visible"] and image["src"].startswith("data:image/png;base64,")
    claims = [t for t in facts["tables"] if t["head"] and t["head"][0].startswith("claim")]
    assert len(claims) == 1 and claims[0]["visible"] and claims[0]["rows"] >= 3
    assert all(t["visible"] for t in facts["tables"])
    assert "Verdict" in facts["headings"] and "Figures" in facts["headings"]


@needs_browser
def test_a_broken_figure_is_seen_as_broken(report_dir, tmp_path):
    """The check is real: an image that does not load is reported as not loaded."""
    page = tmp_path / "broken.html"
    page.write_text((report_dir / "report.html").read_text().replace("data:image/png;base64,", "missing-", 1))
    facts = page_facts(page)
    assert [i["width"] for i in facts["images"]].count(0) == 1


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@needs_browser
def test_report_screenshot_is_the_whole_page(report_dir, tmp_path, tiny_corpus_dir, tmp_path_factory):
    from xling.report.browser import screenshot

    width, height = _png_size(report_dir / "report.png")
    assert width >= 1000 and height > 2000  # the whole page, not one screenful
    # a table wider than the window widens the picture (the page is centred), so no column is cut off
    wide = tmp_path / "wide.html"
    cells = "".join(f"<td>column {i} of many</td>" for i in range(40))
    wide.write_text(f"<html><body style='max-width:40rem;margin:auto'><table><tr>{cells}</tr></table></body></html>")
    assert _png_size(screenshot(wide, tmp_path / "wide.png"))[0] > 3000
    # a report written again without --screenshot leaves no picture of the earlier one beside it
    _, root = completed_study(tmp_path_factory, tiny_corpus_dir)
    copy = tmp_path / "report"
    shutil.copytree(report_dir, copy)
    assert main(["report", str(copy / "tiny.yaml"), "--root", str(root), "--out", str(copy)]) == 0
    assert not (copy / "report.png").exists()


def test_screenshot_without_a_browser_is_one_line_and_writes_nothing(tiny_corpus_dir, tmp_path_factory, tmp_path,
                                                                      capsys, monkeypatch):
    _, root = completed_study(tmp_path_factory, tiny_corpus_dir)
    path = write_study(tmp_path / "tiny.yaml", tiny_study_dict(tiny_corpus_dir))
    monkeypatch.setenv("XLING_BROWSER", str(tmp_path / "no-such-browser"))
    assert main(["report", str(path), "--root", str(root), "--out", str(tmp_path / "rep"), "--screenshot"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install chromium-headless-shell" in err
    assert not (tmp_path / "rep").exists()
