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
def cell(source: str, output: str = "", folded: bool = True) -> str:
    """A code cell as myst-nb renders it; ``folded``: its source behind a toggle (hide-input)."""
    code = f"<div class='cell_input docutils container'><pre>{source}</pre></div>"
    if folded:
        code = f"<details class='hide above-input'><summary>Show code cell source</summary>{code}</details>"
    tag = " tag_hide-input" if folded else ""
    return f"<div class='cell{tag} docutils container'>{code}<div class='cell_output'>{output}</div></div>"


ANSWER = ("<h2>What the measurements say</h2><p>At 4 bits per-tensor top-1 falls to "
          "<span class='pasted-text'>52.99</span> %.</p>")
FIGURE = "<img src='../_images/plot.png' alt='top-1 against bits'>"


def notebook_page(*parts: str) -> str:
    return html("<main><article class='bd-article'><h1>02 · PTQ</h1>" + "".join(parts) + "</article></main>")


GOOD_NOTEBOOK = notebook_page(ANSWER, cell("model = 'resnet20_cifar'"), cell("plot()", FIGURE),
                              cell("print(1)", "<pre>1</pre>", folded=False))

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
        "notebooks/01_good.html": GOOD_NOTEBOOK,
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
    # the broken pages break the page conventions too: they hold no answer
    assert "FAIL notebooks/02_broken_image.html: no 'what the measurements say' statement" in out
    assert "FAIL notebooks/03_console_error.html: console error: boom" in out
    assert "FAIL notebooks/02_broken_image.html: image did not load" in out
    assert "FAIL index.html" not in out and "FAIL book/methods.html" not in out
    for shot in ("index.png", "notebooks_01_good.png", "notebooks_03_console_error.png"):
        assert (book / "_screenshots" / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_build_is_refused(tmp_path, chromium):
    with pytest.raises(FileNotFoundError, match="build it first"):
        check_book.check_book(tmp_path / "nope", tmp_path / "_toc.yml", executable=chromium)


# The page conventions, on constructed HTML (no browser needed)
ROOT_HERE = "/srv/build/vitquant"


def failures(page: str) -> list[str]:
    return check_book.notebook_page_failures(page, ROOT_HERE)


def test_a_page_that_opens_with_its_glued_answer_and_folds_its_code_passes():
    assert failures(GOOD_NOTEBOOK) == []


@pytest.mark.parametrize("text, path", [
    ("results_dir = '/tmp/pytest-7/results/quick'", "/tmp/pytest-7/results/quick"),
    ("/home/ana/data/cifar", "/home/ana/data/cifar"), ("(/work/main/.cache/data)", "/work/main/.cache/data"),
    ("C:\\Users\\ana\\data", "C:\\Users\\ana\\data"),
    (f"checkpoint {ROOT_HERE}/checkpoints/r.safetensors", f"{ROOT_HERE}/checkpoints/r.safetensors"),
    (f"cd {ROOT_HERE}", ROOT_HERE)], ids=["tmp", "home", "work", "windows", "root-file", "root-alone"])
def test_a_machine_path_anywhere_on_the_page_fails_it(text, path):
    for part in (cell(text), cell("x", f"<pre>{text}</pre>"), f"<p>{text}</p>"):
        assert failures(notebook_page(ANSWER, FIGURE, part)) == [f"machine path in the text: {path}"], part


@pytest.mark.parametrize("text", ["https://example.org/home/x", "see ~/work/notes", "checkpoints/r.safetensors",
                                  "rows/tmp/a.json", f"{ROOT_HERE}-old"], ids=["url", "tilde", "relative",
                                                                             "inner", "root-prefix"])
def test_urls_and_relative_paths_are_not_machine_paths(text):
    assert failures(notebook_page(ANSWER, FIGURE, f"<p>{text}</p>")) == []


def test_an_unfolded_code_cell_before_the_first_figure_or_table_fails():
    expect = "an unfolded code cell comes before the first figure or table (fold it: tag hide-input)"
    assert failures(notebook_page(ANSWER, cell("setup()", folded=False), cell("plot()", FIGURE))) == [expect]
    assert failures(notebook_page(ANSWER, cell("setup()", folded=False))) == [expect]
    # a table first is fine, and so is a page whose every cell is folded
    table = "<table><tr><td>89.30</td></tr></table>"
    assert failures(notebook_page(ANSWER, cell("t", table), cell("setup()", folded=False))) == []
    assert failures(notebook_page(ANSWER, cell("setup()"), cell("more()"))) == []
    # an image inside the folded source is not a figure of the page
    assert failures(notebook_page(ANSWER, cell("<img src='x.png'>", folded=False))) == [expect]


def test_the_answer_must_come_first_and_hold_a_glued_number():
    assert failures(notebook_page(cell("p = 1"), ANSWER, FIGURE)) == [
        "'what the measurements say' comes after the first code cell (the answer must come first)"]
    assert failures(notebook_page("<p>No answer here.</p>", cell("p = 1", FIGURE))) == [
        "no 'what the measurements say' statement (the page must open with its answer)"]
    typed = "<h2>What the measurements say</h2><p>Top-1 falls to 52.99 %.</p>"
    assert failures(notebook_page(typed, cell("p = 1", FIGURE))) == [
        "'what the measurements say' holds no glued number (fill it with {glue:text} from the run's results)"]


def test_an_unrendered_glue_role_and_a_progress_bar_fail():
    raw = "<p>{glue:text}`top1_w4:.2f` %</p>"
    assert failures(notebook_page(ANSWER, FIGURE, raw)) == [
        "unrendered glue role in the text (a {glue:...} whose value the page does not hold)"]
    bar = "<pre>ptq W4A4:  45%|████▌     | 18/40 [00:04&lt;00:04,  4.53it/s]</pre>"
    (found,) = failures(notebook_page(ANSWER, FIGURE, cell("x", bar)))
    assert found.startswith("progress bar in the output: '45%|████▌     | 18/40'")
