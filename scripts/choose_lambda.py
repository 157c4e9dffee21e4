"""Chooses each weight penalty's λ from a run of pipelines/lambda-sweep.pipe.

The criterion is VSE++'s model selection on validation data: rsum, the sum of R@1,
R@5 and R@10 of both directions with the task known, here averaged over the tasks
after the last stage (the `average` figure of summary.arrow) and over seeds. Prints
a Markdown table of every λ and the choice; with --check PIPELINE..., fails when a
pipeline uses another λ for a penalty than the one chosen.

    .venv/bin/python scripts/choose_lambda.py RUN_DIR [--check pipelines/table1.pipe ...]
"""
import re
import sys
from pathlib import Path

import polars as pl


def rsum_by_variant(run_dir):
    s = pl.read_ipc(Path(run_dir) / "summary.arrow")
    s = s.filter((pl.col("statistic") == "value") & (pl.col("metric") == "average")
                 & (pl.col("gallery") == "per_task"))
    per_seed = s.group_by(["variant", "seed"]).agg(pl.col("value").sum().alias("rsum"))
    return per_seed.group_by("variant").agg(pl.col("rsum").mean().alias("mean"),
                                            pl.col("rsum").std().alias("std"),
                                            pl.len().alias("seeds"))


def choose(table):
    choices, rows = {}, []
    ft = table.filter(pl.col("variant") == "ft")
    for method in ["EWC", "MAS"]:
        sub = table.filter(pl.col("variant").str.starts_with(method + " "))
        sub = sub.with_columns(pl.col("variant").str.split(" ").list.get(1).cast(pl.Float64).alias("lam")).sort("lam")
        best = sub.sort(["mean", "lam"], descending=[True, False]).row(0, named=True)
        choices[method.lower()] = best["variant"].split(" ")[1]
        rows.extend(sub.iter_rows(named=True))
    return choices, rows, ft.row(0, named=True) if ft.height else None


def main(argv):
    run_dir = argv[1]
    table = rsum_by_variant(run_dir)
    choices, rows, ft = choose(table)
    print("| variant | validation rsum (mean ± std over seeds) |")
    print("| --- | --- |")
    if ft:
        print(f"| ft | {ft['mean']:.1f} ± {ft['std']:.1f} |")
    for r in rows:
        mark = " **chosen**" if r["variant"].split(" ")[1] == choices[r["variant"].split(" ")[0].lower()] else ""
        print(f"| {r['variant']} | {r['mean']:.1f} ± {r['std']:.1f}{mark} |")
    print()
    print("chosen: " + ", ".join(f"{m} λ = {v}" for m, v in choices.items()))
    if "--check" in argv:
        bad = []
        for path in argv[argv.index("--check") + 1:]:
            text = Path(path).read_text()
            for method, value in choices.items():
                for found in re.findall(rf"{method}\(lambda = ([0-9.e+-]+)", text):
                    if float(found) != float(value):
                        bad.append(f"{path}: {method}(lambda = {found}), the sweep chose {value}")
        if bad:
            print("\n".join(bad), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
