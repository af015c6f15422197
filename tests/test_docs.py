"""The documentation stays true to its data and its links, and records no machine's paths.

A benchmark table lives in a data file under docs/benchmarks/data/ and is rendered into its page
by scripts/render_docs.py; a page edited by hand, or data changed without re-rendering, fails
here. So does a relative link to a file or heading that does not exist, and an absolute home,
work or temporary path in anything under README.md, CHANGELOG.md, docs/ or configs/.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.helpers.front_ends import REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = _script("render_docs")
compare_table = _script("compare_table")

DATA = REPO / "docs" / "benchmarks" / "data"
# Pages other engineers write (issues 26 and 28); README.md and docs/README.md link them already,
# so a missing one fails the link test below until it lands.
PAGES_WRITTEN_ELSEWHERE = ("docs/development.md", "docs/api.md", "docs/benchmarks/scale.md",
                           "docs/benchmarks/quality.md")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
                  r"|!\[[^\]]*\]\((?P<image>[^)\s]+)\)")
# Tables written by scripts/compare_table.py from the reports compare wrote: (kind, reports).
FLIP_HINT10 = ("methods-fashion/flip-hint10-ce-fitnet-kd-partial-kd.json",
               "methods-fashion/flip-hint10-union-kd-fitnet-union-kd-dkd-simkd.json")
DERIVED_TABLES = {"methods-fashion.csv": ("scores", FLIP_HINT10),
                  "methods-fashion-error-split.csv": ("errors", FLIP_HINT10)}
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:home|work|tmp|root|Users)/|[A-Za-z]:\\Users\\")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(match[1]) for match in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.MULTILINE)}


def broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    broken = []
    for match in LINK.finditer(text):
        target = match["target"] or match["image"]
        if re.match(r"^[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        name = f"{page.relative_to(REPO)}: {target}"
        if not resolved.exists():
            pending = any(resolved == (REPO / p).resolve() for p in PAGES_WRITTEN_ELSEWHERE)
            broken.append(name + (" (a page another engineer writes: not there yet)" if pending else ""))
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{name} (no heading with anchor #{anchor})")
    return broken


def test_rendered_tables_are_up_to_date_with_their_data():
    stale = [str(page.relative_to(REPO)) for page in render_docs.stale_pages()]
    assert not stale, f"run python scripts/render_docs.py: {stale}"


def test_every_data_table_is_shown_on_some_page():
    used = set()
    for page in render_docs.pages():
        for match in render_docs.BLOCK.finditer(page.read_text(encoding="utf-8")):
            used.add((page.parent / match["source"]).resolve())
    orphans = [str(p.relative_to(REPO)) for p in sorted(DATA.glob("*.csv")) if p.resolve() not in used]
    assert not orphans, orphans


@pytest.mark.parametrize("table", sorted(DERIVED_TABLES))
def test_a_derived_table_holds_its_reports_figures(table: str, tmp_path: Path):
    kind, reports = DERIVED_TABLES[table]
    fresh = tmp_path / table
    compare_table.write_table(kind, fresh, [DATA / report for report in reports])
    assert (DATA / table).read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
        f"rewrite it: python scripts/compare_table.py {kind} docs/benchmarks/data/{table} ...")


def test_compare_table_rounds_a_report_as_the_pages_show_it(tmp_path: Path):
    run = {"mean": 0.80323, "std": 0.010751, "runs": [0.7914, 0.8124, 0.80590]}
    other = {"mean": 0.65323, "std": 0.04699, "runs": []}
    report = {"methods": {"ce": {"accuracy": run, "macro_f1": other, "nll": other, "ece": other,
                                 "ece_ts": other, "errors_shared_teacher": {"mean": 0.0831},
                                 "errors_no_shared_teacher": {"mean": 0.113667}}}}
    assert compare_table.score_rows([report])[1] == [
        "ce", "80.32 ± 1.08", "79.14 / 81.24 / 80.59", *["0.653 ± 0.047"] * 4]
    assert compare_table.error_rows([report])[1] == ["ce", "8.31", "11.37"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    assert page.is_file(), page
    assert not broken_links(page)


def test_no_committed_doc_or_config_records_a_machine_path():
    roots = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "docs", REPO / "configs"]
    files = [f for root in roots for f in ([root] if root.is_file() else sorted(root.rglob("*")))
             if f.is_file()]
    found = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images
        for number, line in enumerate(text.splitlines(), start=1):
            if MACHINE_PATH.search(line):
                found.append(f"{file.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not found, "record paths relative to the artefact home:\n" + "\n".join(found)


def test_the_machine_path_pattern_tells_absolute_from_relative():
    for absolute in ('"/work/benchhome/reports/x"', "see /tmp/run", "(/home/me/data)", "/root/.cache",
                     r"C:\Users\me"):
        assert MACHINE_PATH.search(absolute), absolute
    for relative in ("reports/free19/x", "x/../../tmp", "~/experiments", "runs/tmp/work/", "data/home/"):
        assert not MACHINE_PATH.search(relative), relative


def test_a_table_is_rendered_from_its_csv_with_links_rebased_to_the_page(tmp_path: Path):
    data = tmp_path / "docs" / "data"
    data.mkdir(parents=True)
    (data / "t.csv").write_text('method,"accuracy, %",report\nce,80.1,[r](reports/ce.md)\nkd,a|b,\n')
    page = tmp_path / "docs" / "page.md"
    page.write_text("Intro.\n<!-- table: data/t.csv -->\nold\n<!-- end table -->\nAfter.\n")
    rendered = render_docs.render(page.read_text(), page.parent)
    assert rendered == ("Intro.\n<!-- table: data/t.csv -->\n"
                        "| method | accuracy, % | report |\n|---|---|---|\n"
                        "| ce | 80.1 | [r](data/reports/ce.md) |\n| kd | a\\|b |  |\n"
                        "<!-- end table -->\nAfter.\n")
    assert render_docs.render(rendered, page.parent) == rendered  # rendering twice changes nothing


def test_a_ragged_csv_or_a_missing_source_is_an_error(tmp_path: Path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2,3\n")
    with pytest.raises(ValueError, match="bad.csv:2 has 3 cells, the header 2"):
        render_docs.render("<!-- table: bad.csv -->\n<!-- end table -->\n", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        render_docs.render("<!-- table: missing.csv -->\n<!-- end table -->\n", tmp_path)
