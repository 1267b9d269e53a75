"""report.html: one self-contained file (no network), a sortable claims table, plots, folded samples.

The structure is checked by parsing the file; the table's sorting script is checked by
rendering the page in headless Chromium, skipped when no browser is installed.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import render
from test_render import PNG_MAGIC, all_cells, write_run


class Page(HTMLParser):
    """Tags, attributes and the claims table's rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self._in_claims = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._in_claims = dict(attrs).get("id") == "claims"
        elif tag == "tr" and self._in_claims:
            self.rows.append([])
        elif tag == "td" and self._in_claims:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._in_claims = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_run(tmp_path_factory.mktemp("html") / "run", all_cells())
    render(path)
    return path


def _page(run_dir: Path) -> Page:
    page = Page()
    page.feed((run_dir / "report.html").read_text(encoding="utf-8"))
    return page


def test_the_page_needs_no_network_and_inlines_its_plots(run_dir: Path) -> None:
    page = _page(run_dir)
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"^(https?:)?//", value), f"<{tag} {name}={value!r}> reaches the network"
            if name == "href" and name in attrs:
                assert value.startswith("#"), f"<{tag} href={value!r}> leaves the page"
        assert tag != "link", "stylesheets are inline"
        assert not (tag == "script" and attrs.get("src")), "scripts are inline"
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == 2  # efficiency and layer sweep
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def test_the_claims_table_has_a_row_per_cell_with_sortable_values(run_dir: Path) -> None:
    page = _page(run_dir)
    header = [a for t, a in page.tags if t == "th" and a.get("data-key")]
    assert [a["data-key"] for a in header][:3] == ["claim", "protocol", "estimate"]
    assert {a["data-key"]: a["data-type"] for a in header}["estimate"] == "num"
    body = [r for r in page.rows if r]
    assert len(body) == len(all_cells())
    kv = next(r for r in body if r[0] == "kv-only-fails" and r[1] == "original")
    assert kv[2] == "0.1" and kv[3] == "[-0.1, 0.3]" and kv[6] == "refuted"
    nan = next(r for r in body if r[0] == "l27-v-full-kv")
    assert nan[2] == "n/a" and nan[3] == "n/a"


def test_each_cell_is_folded_with_its_fields_and_samples(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    page = _page(run_dir)
    folded = [a["id"] for t, a in page.tags if t == "details" and "cell" in (a.get("class") or "")]
    assert len(folded) == len(all_cells()) == len(set(folded))
    links = {a["href"][1:] for t, a in page.tags if t == "a"}
    assert set(folded) <= links  # every row of the table opens its cell
    section = text.split('id="cell-kv-only-fails-original"')[1].split("</details>")[0]
    assert "<th>baseline</th><th>champion</th><th>kv</th>" in section
    assert "p1 · seed 0" in section and "p2 · seed 1" in section
    assert "observing `itself` again" in section  # sample text escaped, not interpreted
    rv = text.split('id="cell-rv-contraction-original"')[1].split("</details>")[0]
    assert "samples" not in rv and "Arms" not in rv
    assert "How to read this report" in text and "(arm − baseline) / (champion − baseline)" in text


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(b)), None)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium or Chrome installed")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--virtual-time-budget=3000", *args],
                          capture_output=True, text=True, timeout=120)


def test_a_browser_sorts_the_table_by_a_column(run_dir: Path) -> None:
    url = (run_dir / "report.html").as_uri()
    out = _chromium("--dump-dom", url + "#sort=-estimate")
    assert out.returncode == 0, out.stderr[-2000:]
    page = Page()
    page.feed(out.stdout)
    assert 'data-sorted="estimate"' in out.stdout, "the page's script did not run"
    values = [float(r[2]) for r in page.rows if r and r[2] != "n/a"]
    assert len(values) > 5 and values == sorted(values, reverse=True)
    assert [r[2] for r in page.rows if r][-1] == "n/a"  # missing values sort last
    ascending = _chromium("--dump-dom", url + "#sort=claim").stdout
    page = Page()
    page.feed(ascending)
    names = [r[0] for r in page.rows if r]
    assert names == sorted(names)


def test_a_browser_renders_a_screenshot(run_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    out = _chromium(f"--screenshot={shot}", "--window-size=1280,1600", (run_dir / "report.html").as_uri())
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000  # a page with content, not a blank canvas
