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


class Run:
    """One finished run: its provenance, its variant labels in the pipeline's order,
    and its summary figures at K = 10, read once."""

    def __init__(self, path):
        self.path = path
        self.info = json.loads((path / "run.json").read_text())
        self.labels = []
        for v in json.loads((path / "pipeline.json").read_text()):
            if v["label"] not in self.labels:
                self.labels.append(v["label"])
        summary = pl.read_ipc(path / "summary.arrow", memory_map=False)
        self.figures = {
            (r["variant"], r["direction"], r["gallery"], r["metric"], r["statistic"]): r["value"]
            for r in summary.filter(pl.col("k") == 10).iter_rows(named=True)
        }

    def mean(self, variant, direction, gallery="per_task", metric="average"):
        return self.figures.get((variant, direction, gallery, metric, "mean"))

    def std(self, variant, direction, gallery="per_task", metric="average"):
        """The std over seeds (0 with one seed)."""
        return self.figures.get((variant, direction, gallery, metric, "std")) or 0.0


def verdict(a, sa, b, sb):
    """Whether a > b, and whether the gap exceeds the larger seed std of the two."""
    noise = "" if abs(a - b) > max(sa, sb) else ", within noise"
    return ("yes" if a > b else "no") + noise


def fmt(x):
    return "–" if x is None else f"{x:.1f}"


def line_label(variant):
    """The variant-line part of a label (`frozen ft, no sharing` -> `frozen ft`)."""
    return variant.split(", ")[0]


def comparison(run):
    # The seed's quoted numbers are without sharing; take our no-sharing columns
    # when the grid has them.
    chosen = [v for v in run.labels if v.endswith("no sharing")] or run.labels
    out = ["| variant (im2txt R@10, no sharing) | ours: average | ours: union | seed SeViGe: average "
           "| seed SeCOCO: average | seed SeCOCO: union |", "| :-- | --: | --: | --: | --: | --: |"]
    for v in chosen:
        name = line_label(v)
        out.append(
            f"| {name} | {fmt(run.mean(v, 'im2txt'))} "
            f"| {fmt(run.mean(v, 'im2txt', 'union', 'total'))} "
            f"| {fmt(SEED_AVERAGE['SeViGe'].get(name))} | {fmt(SEED_AVERAGE['SeCOCO'].get(name))} "
            f"| {fmt(SEED_TOTAL['SeCOCO'].get(name))} |")
    return "\n".join(out)


def findings(run):
    """Each of the seed's findings, per direction and sharing setting, on our run."""
    suffixes = []
    for v in run.labels:
        if v[len(line_label(v)):] not in suffixes:
            suffixes.append(v[len(line_label(v)):])
    rows = ["| finding | setting | figures (R@10, mean over seeds) | holds (\"within noise\": the gap is below the larger seed std) |",
            "| :-- | :-- | :-- | :-: |"]
    union = ("union", "total")
    for direction in ["im2txt", "txt2im"]:
        for suffix in suffixes:
            setting = direction + (f" ·{suffix[1:]}" if suffix else "")
            avg = lambda name, *where: run.mean(name + suffix, direction, *where)
            sd = lambda name, *where: run.std(name + suffix, direction, *where)
            joint_name = max(["joint CTNP", "joint"], key=lambda n: avg(n) or -1)
            joint = avg(joint_name)
            continual_names = [line_label(v) for v in run.labels
                               if v.endswith(suffix) and not v.startswith("joint")]
            continual = {n: avg(n) for n in continual_names}
            best = max(continual, key=continual.get)
            rows.append(f"| joint above continual | {setting} | best joint {joint:.1f} vs best "
                        f"continual {continual[best]:.1f} ({best}) | "
                        f"{verdict(joint, sd(joint_name), continual[best], sd(best))} |")
            f_known, r_known = avg("frozen ft"), avg("reindex ft")
            f_union, r_union = avg("frozen ft", *union), avg("reindex ft", *union)
            rows.append(f"| no reindexing above reindexing (task known) | {setting} | frozen ft "
                        f"{f_known:.1f} vs reindex ft {r_known:.1f} | "
                        f"{verdict(f_known, sd('frozen ft'), r_known, sd('reindex ft'))} |")
            rows.append(f"| no reindexing above reindexing (union) | {setting} | frozen ft "
                        f"{f_union:.1f} vs reindex ft {r_union:.1f} | "
                        f"{verdict(f_union, sd('frozen ft', *union), r_union, sd('reindex ft', *union))} |")
            everyone = continual_names + ["joint CTNP", "joint"]
            below = [n for n in everyone if avg(n, *union) is not None and avg(n, *union) < avg(n)]
            gaps = [avg(n) - avg(n, *union) for n in everyone]
            rows.append(f"| union below per-task recall | {setting} | {len(below)} of {len(everyone)} "
                        f"variants; gap {min(gaps):.1f} to {max(gaps):.1f} points | "
                        f"{'yes' if len(below) == len(everyone) else 'no'} |")
            policy_gap = abs(f_known - r_known)
            reg = [abs(avg(n) - avg(f"{policy} ft")) for policy in ["reindex", "frozen"]
                   for n in continual_names if n.startswith(policy) and n != f"{policy} ft"]
            rows.append(f"| regularizers small next to the indexing policy | {setting} | largest "
                        f"regularizer effect {max(reg):.1f} vs policy gap {policy_gap:.1f} | "
                        f"{'yes' if max(reg) < policy_gap else 'no'} |")
    return "\n".join(rows)


def ablation_table(runs):
    """One row per run (each ablation file has one variant): the headline figures."""
    cols = [(direction, gallery, metric, title)
            for direction in ["im2txt", "txt2im"]
            for gallery, metric, title in [("per_task", "average", "average"),
                                           ("union", "total", "union"),
                                           ("per_task", "forgetting", "forgetting")]]
    out = ["| pipeline | " + " | ".join(f"{d} {t}" for d, _, _, t in cols) + " |",
           "| :-- |" + " --: |" * len(cols)]
    for run in runs:
        (variant,) = run.labels
        cells = []
        for direction, gallery, metric, _ in cols:
            mean = run.mean(variant, direction, gallery, metric)
            std = run.figures.get((variant, direction, gallery, metric, "std"))
            if mean is None:
                cells.append("–")
            elif std is not None:
                cells.append(f"{mean:.1f} ± {std:.1f}")
            else:
                cells.append(f"{mean:.1f}")
        out.append(f"| `{Path(run.info['file']).name}` | " + " | ".join(cells) + " |")
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


def zeroshot_table(run):
    """Zero-shot top-1 accuracy per variant: the tasks' class sets after the last stage
    (average and forgetting over the tasks, summary.arrow) and each downstream set's
    accuracy after stage 0, 1 and the last (zeroshot.arrow), mean over seeds."""
    summary = pl.read_ipc(run.path / "summary.arrow", memory_map=False).filter(
        (pl.col("direction") == "zeroshot") & (pl.col("k") == 1) & (pl.col("statistic") == "mean"))
    acc = pl.read_ipc(run.path / "zeroshot.arrow", memory_map=False).filter(pl.col("k") == 1)
    own = sorted({g for g in summary["gallery"].to_list() if "/" not in g})
    downstream = sorted({g for g in acc["class_set"].to_list() if "/" in g})
    header = ["variant"]
    for s in own:
        header += [f"{s}: average", f"{s}: forgetting"]
    for d in downstream:
        header += [f"{d}: stage 0", f"{d}: stage 1", f"{d}: last", f"{d}: best"]
    rows = ["| " + " | ".join(header) + " |", "| :-- |" + " --: |" * (len(header) - 1)]
    for label in run.labels:
        cells = [line_label(label)]
        for s in own:
            for metric in ("average", "forgetting"):
                v = summary.filter((pl.col("variant") == label) & (pl.col("gallery") == s)
                                   & (pl.col("metric") == metric))["value"]
                cells.append(fmt(v[0]) if len(v) else "")
        for d in downstream:
            mine = acc.filter((pl.col("variant") == label) & (pl.col("class_set") == d))
            by_stage = mine.group_by("stage").agg(pl.col("accuracy").mean()).sort("stage")
            stages = dict(zip(by_stage["stage"].to_list(), by_stage["accuracy"].to_list()))
            last = max(stages)
            cells += [fmt(stages.get(0)), fmt(stages.get(1)), fmt(stages[last]),
                      fmt(max(v for k, v in stages.items() if k >= 1))]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def mean_std(values):
    """Mean and sample std of a list (std 0 for one value); (None, 0) for none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, 0.0
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def incclip_claim(run):
    """IncCLIP's claim (pseudo text replay helps most) per setting and figure: each
    IncCLIP variant (labels starting with IncCLIP) against the best of the variants
    without pseudo text replay, each mean ± sample std over seeds, after the last
    stage."""
    summary = pl.read_ipc(run.path / "summary.arrow", memory_map=False)
    acc = pl.read_ipc(run.path / "zeroshot.arrow", memory_map=False).filter(pl.col("k") == 1)
    settings = []
    for label in run.labels:
        setting = line_label(label)
        if setting not in settings:
            settings.append(setting)
    downstream = sorted({g for g in acc["class_set"].to_list() if "/" in g})
    own = sorted({g for g in summary.filter(pl.col("direction") == "zeroshot")["gallery"].to_list()
                  if "/" not in g})

    def summary_figure(label, direction, gallery, k):
        rows = summary.filter((pl.col("variant") == label) & (pl.col("direction") == direction)
                              & (pl.col("gallery") == gallery) & (pl.col("k") == k)
                              & (pl.col("metric") == "average"))
        get = lambda stat: next(iter(rows.filter(pl.col("statistic") == stat)["value"].to_list()), None)
        return get("mean"), get("std") or 0.0

    def downstream_figure(label, name):
        mine = acc.filter((pl.col("variant") == label) & (pl.col("class_set") == name))
        if mine.is_empty():
            return None, 0.0
        last = mine.filter(pl.col("stage") == mine["stage"].max())
        per_seed = last.group_by("seed").agg(pl.col("accuracy").mean())["accuracy"].to_list()
        return mean_std(per_seed)

    figures = [("retrieval im2txt R@10 (average over tasks)", lambda l: summary_figure(l, "im2txt", "per_task", 10)),
               ("retrieval txt2im R@10 (average over tasks)", lambda l: summary_figure(l, "txt2im", "per_task", 10))]
    figures += [(f"zero-shot {s} top-1 (average over tasks)", lambda l, s=s: summary_figure(l, "zeroshot", s, 1))
                for s in own]
    figures += [(f"zero-shot {d} top-1 (downstream)", lambda l, d=d: downstream_figure(l, d))
                for d in downstream]
    out = []
    for setting in settings:
        labels = [l for l in run.labels if line_label(l) == setting]
        names = [l[len(setting) + 2:] for l in labels]
        out.append(f"#### {setting}\n")
        out.append("| figure (after the last stage, mean ± std over seeds) | "
                   + " | ".join(names) + " | pseudo text replay helps most |")
        out.append("| :-- |" + " --: |" * len(names) + " :-: |")
        for title, figure in figures:
            values = {n: figure(l) for n, l in zip(names, labels)}
            cells = [f"{fmt(m)} ± {sd:.1f}" if m is not None else "–" for m, sd in values.values()]
            others = {n: v for n, v in values.items()
                      if not n.startswith("IncCLIP") and v[0] is not None}
            verdicts = []
            for name, ours in values.items():
                if not name.startswith("IncCLIP") or ours[0] is None or not others:
                    continue
                best = max(others, key=lambda n: others[n][0])
                verdicts.append(f"{name}: " + verdict(ours[0], ours[1], others[best][0], others[best][1])
                                + f" (best other: {best})")
            claim = "; ".join(verdicts) or "–"
            out.append(f"| {title} | " + " | ".join(cells) + f" | {claim} |")
        out.append("")
    return "\n".join(out).strip()


# The columns a Table-1-like grid has, which the comparison and findings need.
TABLE1_COLUMNS = {"joint", "joint CTNP", "reindex ft", "frozen ft", "frozen EWC"}


def block(lethe, runs):
    if len(runs) > 1:
        # Several files run with one cache (the ablations): a line each.
        rows = ["| command (in this order, one cache) | wall | nodes computed | from the cache |",
                "| :-- | --: | --: | --: |"]
        for run in sorted(runs, key=lambda r: r.info["started"]):
            rows.append(f"| `lethe run {run.info['file']}` | {run.info['wall_seconds']:.1f} s "
                        f"| {run.info['nodes']['executed']} | {run.info['nodes']['cached']} |")
        return "\n\n".join(["\n".join(rows),
                             "R@10, mean ± std over seeds; union = the union gallery with every "
                             "task's queries pooled; forgetting in recall points.\n\n"
                             + ablation_table(runs)])
    (run,) = runs
    if run.info["pipeline"] == "lambda-sweep":
        chosen = subprocess.run([sys.executable, str(REPO / "scripts" / "choose_lambda.py"), str(run.path)],
                                check=True, capture_output=True, text=True).stdout
        return "\n\n".join([provenance(run.info), chosen.strip()])
    parts = [provenance(run.info), report_tables(lethe, run.path)]
    if run.info["pipeline"] == "incclip":
        parts.append("### IncCLIP's claim on this run\n\n" + incclip_claim(run))
    elif (run.path / "zeroshot.arrow").exists():
        parts.append("### Zero-shot classification (top-1 %, mean over seeds)\n\n" + zeroshot_table(run))
    if TABLE1_COLUMNS <= {line_label(v) for v in run.labels}:
        parts.append("### Ours next to the seed's\n\n" + comparison(run))
        parts.append("### The seed's findings on this run\n\n" + findings(run))
    return "\n\n".join(parts)


def main():
    name, lethe, *runs = sys.argv[1:]
    runs = [Run(Path(r)) for r in runs]
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
