"""tools/check_book.py in Chromium on a tiny static site: what it must pass and what it must report."""
from __future__ import annotations

import importlib.util
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_book", ROOT / "tools" / "check_book.py")
check_book = importlib.util.module_from_spec(_spec)
sys.modules["check_book"] = check_book  # dataclasses look their module up there
_spec.loader.exec_module(check_book)

TOC = """format: jb-book
root: index
parts:
  - caption: Methods
    chapters:
      - file: book/methods
  - caption: Experiments
    chapters:
      - file: notebooks/01_good
      - file: notebooks/02_broken_image
      - file: notebooks/03_console_error
"""


def png(width: int, height: int) -> bytes:
    """A real RGB PNG file, one grey row repeated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * 3 * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def html(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"


# A stand-in for MathJax 3: typesets each .math element a moment after load and resolves
# startup.promise when done, so the check must wait for the promise to see the equations.
FAKE_MATHJAX = """<script>
window.MathJax = {startup: {promise: new Promise(done => window.addEventListener('load', () => setTimeout(() => {
  document.querySelectorAll('.math').forEach(e => { e.innerHTML = '<mjx-container>x</mjx-container>'; });
  done();
}, 300)))}};
</script>"""
MATH = "<p>inline <span class='math'>\\(s = \\max|x|\\)</span></p><div class='math'>\\[q = x/s\\]</div>"


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(check_book.CHROMIUM).exists():
        pytest.fail(f"{check_book.CHROMIUM} is missing: run tools/install_browser.sh first")
    return check_book.CHROMIUM


def site(root: Path, pages: dict[str, str]) -> Path:
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "plot.png").write_bytes(png(40, 30))
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "_toc.yml").write_text(TOC)
    return root


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    return site(tmp_path_factory.mktemp("html"), {
        "index.html": html("<h1>Book</h1><img src='_images/plot.png' alt='plot'>"),
        "book/methods.html": html(MATH + "<pre>a literal \\( in code is fine</pre>", FAKE_MATHJAX),
        "notebooks/01_good.html": html("<img src='../_images/plot.png'>"),
        "notebooks/02_broken_image.html": html("<img src='../_images/missing.png'>"),
        "notebooks/03_console_error.html": html("<script>console.error('boom: results missing')</script>"),
    })


@pytest.fixture(scope="module")
def reports(book, chromium) -> dict[str, check_book.PageReport]:
    return {r.page: r for r in check_book.check_book(book, book / "_toc.yml", executable=chromium)}


def test_toc_pages_are_the_root_then_every_file_in_order(book):
    assert check_book.toc_pages(book / "_toc.yml") == [
        "index.html", "book/methods.html", "notebooks/01_good.html", "notebooks/02_broken_image.html",
        "notebooks/03_console_error.html"]


def test_a_toc_without_root_is_refused(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nchapters: []\n")
    with pytest.raises(ValueError, match="no 'root' entry"):
        check_book.toc_pages(tmp_path / "_toc.yml")


def test_good_pages_pass(reports):
    """Passing includes the browser's own request for a /favicon.ico the site does not have."""
    for page in ("index.html", "notebooks/01_good.html"):
        r = reports[page]
        assert r.status == 200 and r.failures() == [], (page, r.failures())
        assert len(r.images) == 1 and r.images[0]["width"] == 40


def test_mathjax_is_awaited_and_its_equations_counted(reports):
    r = reports["book/methods.html"]
    assert r.mathjax == "ready" and r.equations == 2 and r.untypeset == 0 and r.raw_tex == []
    assert r.failures() == []


def test_a_broken_image_is_reported(reports):
    failures = reports["notebooks/02_broken_image.html"].failures()
    assert any(f.startswith("image did not load") and f.endswith("_images/missing.png") for f in failures)


def test_a_console_error_is_reported(reports):
    r = reports["notebooks/03_console_error.html"]
    assert any("boom: results missing" in e for e in r.console_errors)
    assert any(f.startswith("console error: boom") for f in r.failures())


def test_untypeset_math_and_missing_pages_are_reported(tmp_path, chromium):
    """Without MathJax the TeX stays raw; a toc entry with no page is a 404."""
    root = site(tmp_path, {"index.html": html("ok"), "book/methods.html": html(MATH)})
    r = {x.page: x for x in check_book.check_book(root, root / "_toc.yml", executable=chromium)}
    failures = r["book/methods.html"].failures()
    assert "no equation rendered (no mjx-container; MathJax absent)" in failures
    assert "2 math element(s) left untypeset (MathJax absent)" in failures
    assert [f for f in failures if f.startswith("raw TeX visible")] == [
        "raw TeX visible: '\\\\(s = \\\\max|x|\\\\)'", "raw TeX visible: '\\\\[q = x/s\\\\]'"]
    missing = r["notebooks/01_good.html"].failures()
    assert missing[0] == "HTTP status 404 (expected 200)"
    assert all("status of 404" in f and f.endswith("/notebooks/01_good.html)") for f in missing[1:])


def test_main_fails_with_the_list_and_saves_screenshots(book, chromium, capsys):
    assert check_book.main([str(book), "--toc", str(book / "_toc.yml"), "--chromium", chromium]) == 1
    out = capsys.readouterr().out
    # the broken image's 404 is a console error too
    assert "5 pages, 3 images, 2 equations, 2 console errors" in out
    assert "FAIL notebooks/03_console_error.html: console error: boom" in out
    assert "FAIL notebooks/02_broken_image.html: image did not load" in out
    assert "FAIL index.html" not in out and "FAIL book/methods.html" not in out
    for shot in ("index.png", "notebooks_03_console_error.png"):
        assert (book / "_screenshots" / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_build_is_refused(tmp_path, chromium):
    with pytest.raises(FileNotFoundError, match="build it first"):
        check_book.check_book(tmp_path / "nope", tmp_path / "_toc.yml", executable=chromium)
