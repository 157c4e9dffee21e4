"""Writes one generated block of docs/REPRODUCTION.md from finished runs.

Usage: reproduce_blocks.py NAME LETHE RUN_DIR [RUN_DIR ...]

The block between `<!-- BEGIN NAME -->` and `<!-- END NAME -->` is replaced by: the
command and wall time of each run, its paper tables (`lethe report --format
markdown`, up to the formulas), and for the Table-1-like grids our figures next to
the seed's and a check of each of the seed's findings, computed from summary.arrow.
Called by scripts/reproduce; everything it writes comes from the runs.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "REPRODUCTION.md"

# methods.md, "What the seed's tables show": im2txt Recall@10, no sharing, average
# over tasks after the last task (and the union total where quoted).
SEED_AVERAGE = {
    "SeCOCO": {"joint CTNP": 53.5, "joint": 52.9, "reindex ft": 37.7, "reindex EWC": 36.9,
               "reindex MAS": 37.7, "frozen ft": 45.5, "frozen EWC": 44.9, "frozen EWC-q": 44.5,
               "frozen MAS": 46.0, "frozen MAS-q": 44.6},
    "SeViGe": {"joint CTNP": 29.3, "joint": 27.0, "reindex ft": 21.5, "reindex EWC": 22.3,
               "reindex MAS": 22.4, "frozen ft": 24.5, "frozen EWC": 24.6},
}
SEED_TOTAL = {"SeCOCO": {"joint CTNP": 52.4, "joint": 49.8, "reindex ft": 33.0, "frozen ft": 37.1}}


def report_tables(lethe, run):
    """The report's paper tables, headings moved two levels down."""
    text = subprocess.run([lethe, "report", str(run), "--format", "markdown"], check=True,
                          capture_output=True, text=True).stdout
    text = text.split("\n## Formulas")[0]
    lines = text.splitlines()[1:]  # the report's own title
    return "\n".join("#" + l if l.startswith("## ") else l for l in lines).strip()


def labels(run):
    """Variant labels in the pipeline's order."""
    out = []
    for v in json.loads((run / "pipeline.json").read_text()):
        if v["label"] not in out:
            out.append(v["label"])
    return out


def summary(run, statistic="mean"):
    s = pl.read_ipc(run / "summary.arrow", memory_map=False)
    return s.filter(pl.col("statistic") == statistic)


def figure(s, variant, direction, gallery, metric, k=10):
    row = s.filter((pl.col("variant") == variant) & (pl.col("direction") == direction)
                   & (pl.col("gallery") == gallery) & (pl.col("metric") == metric)
                   & (pl.col("k") == k))
    return row["value"][0] if row.height else None


def spread(s, variant, direction, gallery, metric, k=10):
    """The std over seeds of a figure (0 with one seed)."""
    row = s.filter((pl.col("variant") == variant) & (pl.col("direction") == direction)
                   & (pl.col("gallery") == gallery) & (pl.col("metric") == metric)
                   & (pl.col("k") == k))
    return (row["value"][0] or 0.0) if row.height else 0.0


def verdict(a, sa, b, sb):
    """Whether a > b, and whether the gap exceeds the larger seed std of the two."""
    noise = "" if abs(a - b) > max(sa, sb) else ", within noise"
    return ("yes" if a > b else "no") + noise


def fmt(x):
    return "–" if x is None else f"{x:.1f}"


def line_label(s, variant):
    """The variant-line part of a label (`frozen ft, no sharing` -> `frozen ft`)."""
    return variant.split(", ")[0]


def comparison(run):
    s = summary(run)
    variants = labels(run)
    # The seed's quoted numbers are without sharing; take our no-sharing columns
    # when the grid has them.
    chosen = [v for v in variants if v.endswith("no sharing")] or variants
    out = ["| variant (im2txt R@10, no sharing) | ours: average | ours: union | seed SeViGe: average "
           "| seed SeCOCO: average | seed SeCOCO: union |", "| :-- | --: | --: | --: | --: | --: |"]
    for v in chosen:
        name = line_label(s, v)
        out.append(
            f"| {name} | {fmt(figure(s, v, 'im2txt', 'per_task', 'average'))} "
            f"| {fmt(figure(s, v, 'im2txt', 'union', 'total'))} "
            f"| {fmt(SEED_AVERAGE['SeViGe'].get(name))} | {fmt(SEED_AVERAGE['SeCOCO'].get(name))} "
            f"| {fmt(SEED_TOTAL['SeCOCO'].get(name))} |")
    return "\n".join(out)


def findings(run):
    """Each of the seed's findings, per direction and sharing setting, on our run."""
    s = summary(run)
    std = summary(run, "std")
    variants = labels(run)
    suffixes = []
    for v in variants:
        if v[len(line_label(s, v)):] not in suffixes:
            suffixes.append(v[len(line_label(s, v)):])
    rows = ["| finding | setting | figures (R@10, mean over seeds) | holds (\"within noise\": the gap is below the larger seed std) |",
            "| :-- | :-- | :-- | :-: |"]
    for direction in ["im2txt", "txt2im"]:
        for suffix in suffixes:
            setting = direction + (f" ·{suffix[1:]}" if suffix else "")
            avg = lambda name, gallery="per_task", metric="average": figure(
                s, name + suffix, direction, gallery, metric)
            sd = lambda name, gallery="per_task", metric="average": spread(
                std, name + suffix, direction, gallery, metric)
            joint_name = max(["joint CTNP", "joint"], key=lambda n: avg(n) or -1)
            joint = avg(joint_name)
            continual_names = [line_label(s, v) for v in variants
                               if v.endswith(suffix) and not v.startswith("joint")]
            continual = {n: avg(n) for n in continual_names}
            best = max(continual, key=continual.get)
            rows.append(f"| joint above continual | {setting} | best joint {joint:.1f} vs best "
                        f"continual {continual[best]:.1f} ({best}) | "
                        f"{verdict(joint, sd(joint_name), continual[best], sd(best))} |")
            f_known, r_known = avg("frozen ft"), avg("reindex ft")
            f_union, r_union = avg("frozen ft", "union", "total"), avg("reindex ft", "union", "total")
            rows.append(f"| no reindexing above reindexing (task known) | {setting} | frozen ft "
                        f"{f_known:.1f} vs reindex ft {r_known:.1f} | "
                        f"{verdict(f_known, sd('frozen ft'), r_known, sd('reindex ft'))} |")
            rows.append(f"| no reindexing above reindexing (union) | {setting} | frozen ft "
                        f"{f_union:.1f} vs reindex ft {r_union:.1f} | "
                        f"{verdict(f_union, sd('frozen ft', 'union', 'total'), r_union, sd('reindex ft', 'union', 'total'))} |")
            below = [n for n in continual_names + ["joint CTNP", "joint"]
                     if avg(n, "union", "total") is not None and avg(n, "union", "total") < avg(n)]
            total = len(continual_names) + 2
            gaps = [avg(n) - avg(n, "union", "total") for n in continual_names + ["joint CTNP", "joint"]]
            rows.append(f"| union below per-task recall | {setting} | {len(below)} of {total} "
                        f"variants; gap {min(gaps):.1f} to {max(gaps):.1f} points | "
                        f"{'yes' if len(below) == total else 'no'} |")
            policy_gap = abs(f_known - r_known)
            reg = []
            for policy in ["reindex", "frozen"]:
                base = avg(f"{policy} ft")
                for n in continual_names:
                    if n.startswith(policy) and n != f"{policy} ft":
                        reg.append(abs(avg(n) - base))
            rows.append(f"| regularizers small next to the indexing policy | {setting} | largest "
                        f"regularizer effect {max(reg):.1f} vs policy gap {policy_gap:.1f} | "
                        f"{'yes' if max(reg) < policy_gap else 'no'} |")
    return "\n".join(rows)


def ablation_table(runs):
    """One row per run (each ablation file has one variant): the headline figures."""
    head = ["pipeline"]
    cols = []
    for direction in ["im2txt", "txt2im"]:
        for gallery, metric, title in [("per_task", "average", "average"),
                                       ("union", "total", "union"),
                                       ("per_task", "forgetting", "forgetting")]:
            head.append(f"{direction} {title}")
            cols.append((direction, gallery, metric))
    out = ["| " + " | ".join(head) + " |", "| :-- |" + " --: |" * len(cols)]
    for run in runs:
        info = json.loads((run / "run.json").read_text())
        s = pl.read_ipc(run / "summary.arrow", memory_map=False)
        cells = []
        for direction, gallery, metric in cols:
            rows = s.filter((pl.col("direction") == direction) & (pl.col("gallery") == gallery)
                            & (pl.col("metric") == metric) & (pl.col("k") == 10))
            mean = rows.filter(pl.col("statistic") == "mean")["value"]
            std = rows.filter(pl.col("statistic") == "std")["value"]
            if mean.len() == 0:
                cells.append("–")
            elif std.len() and std[0] is not None:
                cells.append(f"{mean[0]:.1f} ± {std[0]:.1f}")
            else:
                cells.append(f"{mean[0]:.1f}")
        out.append(f"| `{Path(info['file']).name}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


def provenance(info):
    """What ran: the command, the wall time, the nodes, the time by node kind."""
    nodes = info["nodes"]
    kinds = ", ".join(f"{k} {v:.0f} s" for k, v in info["seconds_by_kind"].items() if v >= 0.5)
    n = info["variants"]
    return (f"`lethe run {info['file']}`: {info['wall_seconds']:.0f} s wall on this machine, "
            f"{n} variant{'s' if n != 1 else ''} (labels x seeds), {nodes['executed']} nodes "
            f"computed and {nodes['cached']} taken from the cache (compute by kind: "
            f"{kinds or 'all under half a second'}).")


def block(lethe, runs):
    parts = []
    if len(runs) == 1:
        parts.append(provenance(json.loads((runs[0] / "run.json").read_text())))
    else:
        rows = ["| command (in this order, one cache) | wall | nodes computed | from the cache |",
                "| :-- | --: | --: | --: |"]
        for run in sorted(runs, key=lambda r: json.loads((r / "run.json").read_text())["started"]):
            info = json.loads((run / "run.json").read_text())
            rows.append(f"| `lethe run {info['file']}` | {info['wall_seconds']:.1f} s "
                        f"| {info['nodes']['executed']} | {info['nodes']['cached']} |")
        parts.append("\n".join(rows))
    if len(runs) > 1:
        parts.append("R@10, mean ± std over seeds; union = the union gallery with every task's "
                     "queries pooled; forgetting in recall points.\n\n" + ablation_table(runs))
        return "\n\n".join(parts)
    for run in runs:
        parts.append(report_tables(lethe, run))
        s = summary(run)
        if s.filter(pl.col("variant").str.starts_with("frozen ft")).height and \
                s.filter(pl.col("variant").str.starts_with("joint")).height and \
                s.filter(pl.col("variant").str.starts_with("reindex ft")).height and \
                s.filter(pl.col("variant").str.starts_with("frozen EWC")).height:
            parts.append("### Ours next to the seed's\n\n" + comparison(run))
            parts.append("### The seed's findings on this run\n\n" + findings(run))
    return "\n\n".join(parts)


def main():
    name, lethe, *runs = sys.argv[1:]
    runs = [Path(r) for r in runs]
    doc = DOC.read_text()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in doc or end not in doc:
        sys.exit(f"{DOC}: no `{begin}` ... `{end}` markers")
    new = block(lethe, runs)
    doc = re.sub(re.escape(begin) + ".*?" + re.escape(end),
                 lambda _: f"{begin}\n{new}\n{end}", doc, flags=re.S)
    DOC.write_text(doc)


if __name__ == "__main__":
    main()
