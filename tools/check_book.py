"""Check the rendered book in a real browser: pages load, images decode, MathJax renders, no errors.

Serves the built HTML folder on 127.0.0.1 and drives Debian's headless Chromium through
Playwright (``executable_path``: Playwright's own browser download is never used), then
checks every page ``_toc.yml`` lists:

* it loads with HTTP 200;
* every ``<img>`` has decoded (``naturalWidth > 0``);
* math is typeset: after MathJax's startup promise, no ``.math`` element is left without
  an ``mjx-container`` and no raw TeX delimiter (``\\(``, ``\\[``, ``$$``) is visible outside
  code; on the math pages (the methods page) at least one equation is rendered;
* the browser logged no console error, page error or failed request;
* (notebook pages, ``notebooks/*``; see notebooks/README.md) the text holds no absolute path
  of the build machine (the repository root, ``/tmp/``, ``/home/``, ``/work/`` ...), no
  unrendered ``{glue}`` role and no progress bar; the page states "what the measurements
  say" before its first code cell; and its first figure or table comes before its first
  unfolded code cell (one whose source is not behind a toggle).

Full-page screenshots of the root page and of the first and last notebook pages go to
``<html>/_screenshots/``. Exits non-zero with the list of failures.

    python tools/check_book.py [build/book/_build/html] [--toc _toc.yml]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# The network is closed here: without these, Chromium's background services (updates, sync,
# QUIC probes) fail noisily and slowly.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
MATH_PAGES = ("book/methods.html",)
TIMEOUT_MS = 30_000
# An absolute path of a build machine: the repository's root, or a home, temporary or work
# folder (POSIX, macOS, Windows), not preceded by what would make it part of a URL or a word.
MACHINE_PATH = re.compile(r"(?<![\w/.:~-])(?:/(?:tmp|home|work|root|Users|mnt|scratch|private|var/folders)/"
                          r"|[A-Za-z]:\\Users\\)")
PROGRESS_BAR = re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+")
ANSWER = "what the measurements say"

# Waits for every image (lazy ones made eager) to load or fail, then describes them.
IMAGES_JS = """async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(done => {
    i.addEventListener('load', done, {once: true});
    i.addEventListener('error', done, {once: true});
    setTimeout(done, 10000);
  })));
  return imgs.map(i => ({src: i.currentSrc || i.getAttribute('src') || '', width: i.naturalWidth}));
}"""

# Waits for MathJax 3's startup promise (typesetting done) if MathJax is on the page.
MATHJAX_JS = """async () => {
  const mj = window.MathJax;
  if (!(mj && mj.startup && mj.startup.promise)) return mj ? 'configured, not loaded' : 'absent';
  const timeout = new Promise(done => setTimeout(() => done('timed out'), 20000));
  return await Promise.race([mj.startup.promise.then(() => 'ready'), timeout]);
}"""

# Counts typeset equations, .math elements left untypeset, and raw TeX visible outside code.
MATH_JS = r"""() => {
  const skip = 'pre, code, script, style, textarea, mjx-container, mjx-assistive-mml';
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || !el.getClientRects().length) continue;
    const m = n.textContent.match(/\\\(|\\\[|\$\$|\\begin\{/);
    if (m) raw.push(n.textContent.slice(Math.max(0, m.index - 20), m.index + 40).trim());
  }
  const math = [...document.querySelectorAll('.math')];
  return {equations: document.querySelectorAll('mjx-container').length,
          untypeset: math.filter(e => !e.querySelector('mjx-container')).length, raw: raw};
}"""


@dataclass
class PageReport:
    """What the browser saw on one page."""

    page: str
    status: int | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    mathjax: str = "absent"
    equations: int = 0
    untypeset: int = 0
    raw_tex: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    needs_math: bool = False
    page_failures: list[str] = field(default_factory=list)  # a notebook page's conventions

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if i["width"] <= 0]

    def failures(self) -> list[str]:
        out = [] if self.status == 200 else [f"HTTP status {self.status} (expected 200)"]
        out += [f"image did not load (naturalWidth 0): {src}" for src in self.broken_images]
        if self.needs_math and self.equations == 0:
            out.append(f"no equation rendered (no mjx-container; MathJax {self.mathjax})")
        if self.untypeset:
            out.append(f"{self.untypeset} math element(s) left untypeset (MathJax {self.mathjax})")
        out += [f"raw TeX visible: {snippet!r}" for snippet in self.raw_tex]
        out += [f"console error: {e}" for e in self.console_errors]
        out += [f"request failed: {r}" for r in self.failed_requests]
        return out + self.page_failures


def machine_paths(text: str, root: str | Path = ROOT) -> list[str]:
    """Each absolute path of a build machine (``root`` included) that ``text`` holds, once."""
    root = str(root).rstrip("/")
    hits = [m.start() for m in MACHINE_PATH.finditer(text)]
    hits += [m.start() for m in re.finditer(re.escape(root) + r"(?![\w-])", text)] if len(root) > 1 else []
    return list(dict.fromkeys(re.match(r"[^\s'\"`<>()\[\],;]*", text[i:])[0] for i in sorted(set(hits))))


def notebook_page_failures(html: str, root: str | Path = ROOT) -> list[str]:
    """What a notebook page breaks of the book's page conventions (notebooks/README.md), read
    from its rendered HTML: machine paths, unrendered glue, progress bars, where the answer
    stands, and whether a figure or table comes before the first unfolded code cell."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    body = soup.body or soup
    out = []
    text = body.get_text("") + "\n" + body.get_text(" ")
    out += [f"machine path in the text: {s}" for s in machine_paths(text, root)]
    if "{glue" in text:
        out.append("unrendered glue role in the text (a {glue:...} whose value the page does not hold)")
    out += [f"progress bar in the output: {m[0]!r}" for m in PROGRESS_BAR.finditer(body.get_text(""))][:1]

    article = body.select_one("article") or body.select_one("main") or body
    order = {id(el): i for i, el in enumerate(article.descendants)}

    def pos(el: Any) -> int:  # an element's place in document order
        return order[id(el)]

    cells = [c for c in article.select("div.cell") if c.select_one(".cell_input") is not None]
    first_cell = pos(cells[0]) if cells else None
    unfolded = next((c for c in cells if c.select_one(".cell_input").find_parent("details") is None), None)
    visuals = [el for el in article.find_all(["img", "table", "figure"])
               if el.find_parent(class_="cell_input") is None]
    first_visual = min((pos(v) for v in visuals), default=None)
    answer = next((el for el in article.find_all(["h1", "h2", "h3", "h4", "p", "strong", "span"])
                   if ANSWER in el.get_text(" ").lower() and el.find_parent(class_="cell") is None), None)
    if answer is None:
        out.append(f"no '{ANSWER}' statement (the page must open with its answer)")
    elif first_cell is not None and pos(answer) > first_cell:
        out.append(f"'{ANSWER}' comes after the first code cell (the answer must come first)")
    else:
        glued = [g for g in article.select(".pasted-text, .pasted-inline")
                 if pos(g) > pos(answer) and (first_cell is None or pos(g) < first_cell)]
        if not glued:
            out.append(f"'{ANSWER}' holds no glued number (fill it with {{glue:text}} from the run's results)")
    if unfolded is not None and (first_visual is None or first_visual > pos(unfolded)):
        out.append("an unfolded code cell comes before the first figure or table (fold it: tag hide-input)")
    return out


def toc_pages(toc: str | Path) -> list[str]:
    """The HTML pages ``_toc.yml`` lists: its root, then every ``file:`` entry, in order."""
    import yaml

    data = yaml.safe_load(Path(toc).read_text())
    if not isinstance(data, dict) or "root" not in data:
        raise ValueError(f"{toc} is not a Jupyter Book table of contents: it has no 'root' entry")
    files = [data["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in data.items() if k != "root"})
    pages = [f"{Path(str(f)).with_suffix('')}.html" for f in files]
    return list(dict.fromkeys(pages))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the report says what failed
        pass


@contextlib.contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port, in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def check_page(context: Any, base: str, page: str, needs_math: bool = False,
               screenshot: Path | None = None, root: str | Path = ROOT) -> PageReport:
    """Load ``page`` in a new tab of ``context`` and report what the browser saw."""
    report = PageReport(page, needs_math=needs_math)
    tab = context.new_page()

    def on_console(msg: Any) -> None:
        where = msg.location.get("url", "") if msg.location else ""
        # the browser asks for /favicon.ico by itself; a page that names no icon is not at fault
        if msg.type == "error" and where != base + "favicon.ico":
            report.console_errors.append(f"{msg.text}" + (f" ({where})" if where else ""))

    tab.on("console", on_console)
    tab.on("pageerror", lambda err: report.console_errors.append(f"uncaught {err}"))
    tab.on("requestfailed", lambda req: report.failed_requests.append(f"{req.url} ({req.failure})"))
    try:
        response = tab.goto(base + page, wait_until="load", timeout=TIMEOUT_MS)
        report.status = response.status if response else None
        report.images = tab.evaluate(IMAGES_JS)
        report.mathjax = tab.evaluate(MATHJAX_JS)
        math = tab.evaluate(MATH_JS)
        report.equations, report.untypeset, report.raw_tex = math["equations"], math["untypeset"], math["raw"]
        if page.startswith("notebooks/") and report.status == 200:
            report.page_failures = notebook_page_failures(tab.content(), root)
        if screenshot is not None:
            from vitquant_core.io import atomic_write

            atomic_write(screenshot, tab.screenshot(full_page=True))
    finally:
        tab.close()
    return report


def screenshot_pages(pages: list[str]) -> list[str]:
    """The root page, and the first and last notebook pages (results pages) when the book has them."""
    notebooks = [p for p in pages if p.startswith("notebooks/")]
    return list(dict.fromkeys(pages[:1] + notebooks[:1] + notebooks[-1:]))


def check_book(html: str | Path, toc: str | Path, math_pages: tuple[str, ...] = MATH_PAGES,
               executable: str = CHROMIUM, root: str | Path = ROOT) -> list[PageReport]:
    """Check every page ``toc`` lists in the built book ``html``; screenshots go to ``html/_screenshots``."""
    from playwright.sync_api import sync_playwright

    html = Path(html)
    if not html.is_dir():
        raise FileNotFoundError(f"built book {html} not found: build it first (`make book`), or pass its folder")
    if not Path(executable).exists():
        raise FileNotFoundError(f"no browser at {executable}: run tools/install_browser.sh (installs Debian's "
                                "chromium)")
    pages = toc_pages(toc)
    shots = screenshot_pages(pages)
    reports = []
    with serve(html) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            for page in pages:
                shot = html / "_screenshots" / f"{page[:-len('.html')].replace('/', '_')}.png" \
                    if page in shots else None
                reports.append(check_page(context, base, page, page in math_pages, shot, root))
        finally:
            browser.close()
    return reports


def summary(reports: list[PageReport]) -> str:
    """One line per page, the totals, then every failure by page."""
    lines = [f"{'page':40s} status images equations errors"]
    for r in reports:
        lines.append(f"{r.page:40s} {r.status!s:>6} {len(r.images):6d} {r.equations:9d} "
                     f"{len(r.console_errors) + len(r.failed_requests):6d}")
    failing = [(r.page, f) for r in reports for f in r.failures()]
    lines.append(f"{len(reports)} pages, {sum(len(r.images) for r in reports)} images, "
                 f"{sum(r.equations for r in reports)} equations, "
                 f"{sum(len(r.console_errors) for r in reports)} console errors, {len(failing)} failures")
    lines += [f"FAIL {page}: {f}" for page, f in failing]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("html", nargs="?", default=str(ROOT / "build" / "book" / "_build" / "html"),
                   help="the built HTML folder (default: build/book/_build/html)")
    p.add_argument("--toc", default=str(ROOT / "_toc.yml"), help="the book's _toc.yml (default: the repository's)")
    p.add_argument("--math-page", action="append", dest="math_pages",
                   help=f"a page that must show rendered equations (default: {', '.join(MATH_PAGES)})")
    p.add_argument("--chromium", default=CHROMIUM, help=f"the browser executable (default: {CHROMIUM})")
    args = p.parse_args(argv)
    reports = check_book(args.html, args.toc, tuple(args.math_pages or MATH_PAGES), args.chromium)
    print(summary(reports))
    print(f"screenshots: {Path(args.html) / '_screenshots'}")
    return 1 if any(r.failures() for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
