"""`lethe report`: its paper table recomputed with polars from recall.arrow, and its
HTML page rendered by headless Chromium (Debian's `chromium`) to a screenshot.

Run by scripts/test-python (which installs the packages and Chromium) after
`cargo build --release`.
"""
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest
from summary_check import check_summary_against_recall
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(os.environ.get("LETHE_BIN", REPO / "target" / "release" / "lethe"))
TASKS = ["animals", "vehicles", "clothes"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    subprocess.run(
        [str(LETHE), "run", str(REPO / "tests" / "fixtures" / "report.pipe"),
         "--out", str(tmp / "runs"), "--cache", str(tmp / "cache"), "--quiet"],
        check=True, cwd=tmp, capture_output=True,
    )
    (run,) = list((tmp / "runs" / "report-fixture").iterdir())
    return run


def report(run_dir, *args):
    out = subprocess.run([str(LETHE), "report", str(run_dir), *args],
                         check=True, capture_output=True, text=True)
    return out.stdout


def cell(values):
    """mean ± sample std, one decimal."""
    s = pl.Series(values, dtype=pl.Float64)
    fix = lambda x: "0.0" if f"{x:.1f}" == "-0.0" else f"{x:.1f}"
    return f"{fix(s.mean())} ± {fix(s.std(ddof=1))}"


def markdown_table(doc, title):
    lines = doc[doc.index(f"\n{title}\n"):].splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("|")):]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("*") for c in line.strip("|").split(" | ")])
    return rows[0], rows[2:]


def test_summary_figures_are_recomputed_from_recall(run_dir):
    assert check_summary_against_recall(run_dir) > 0


def test_paper_table_matches_polars(run_dir):
    recall = pl.read_ipc(run_dir / "recall.arrow", memory_map=False)
    doc = report(run_dir, "--format", "markdown", "--k", "10")
    for direction in ["im2txt", "txt2im"]:
        header, body = markdown_table(doc, f"## {direction}")
        by_label = {row[0]: row for row in body}
        for c, variant in enumerate(header[1:], start=1):
            rows = recall.filter((pl.col("variant") == variant) & (pl.col("direction") == direction)
                                 & (pl.col("k") == 10))
            last = rows["stage"].max()
            final = rows.filter(pl.col("stage") == last)
            known = final.filter(pl.col("gallery") == "per_task").sort("seed")
            for task in TASKS:
                values = known.filter(pl.col("eval_task") == task)["recall"].to_list()
                assert by_label[task][c] == cell(values), (direction, variant, task)
            average = (known.filter(pl.col("eval_task").is_in(TASKS)).group_by("seed")
                       .agg(pl.col("recall").mean()).sort("seed")["recall"].to_list())
            assert by_label["average (task known)"][c] == cell(average)
            union = final.filter((pl.col("gallery") == "union") & (pl.col("eval_task") == "all"))
            assert by_label["union animals+vehicles+clothes (task unknown)"][c] == \
                cell(union.sort("seed")["recall"].to_list())


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed (scripts/test-python installs Debian's chromium)")


def test_html_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = tmp_path / "report.html"
    subprocess.run([str(LETHE), "report", str(run_dir), "--format", "html", "-o", str(page)],
                   check=True, capture_output=True)
    html = page.read_text()
    # Every inline plot is well-formed SVG on its own.
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 9
    for svg in svgs:
        ET.fromstring(svg)
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1400,2000"]
    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    # The browser parsed every plot and table the file holds.
    assert dom.count("<svg") == len(svgs)
    assert dom.count("<table") == html.count("<table")
    shot = tmp_path / "report.png"
    subprocess.run(common + [f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 2000)
    # Not a blank page: text, rules and coloured lines give many distinct colours.
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    # The plots' palette is on screen (Tableau blue, the first series' colour).
    assert any(abs(r - 31) < 8 and abs(g - 119) < 8 and abs(b - 180) < 8
               for _, (r, g, b) in colours)
