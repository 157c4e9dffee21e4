"""Chooses each weight penalty's λ from a run of pipelines/lambda-sweep.pipe.

The score is VSE++'s model-selection criterion on validation data: rsum, the sum of
R@1, R@5 and R@10 of both directions with the task known, here averaged over the
tasks after the last stage (the `average` figure of summary.arrow) and over seeds.

The rule is the one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani and
Friedman, ESL §7.10): among the λ whose mean rsum is within one standard error (std
over seeds / √seeds) of the best mean, take the largest: the strongest penalty that
validation cannot tell from the best. A plain argmax is decided by noise here (the
validation part holds 29 images; neighbouring λ differ by less than their standard
errors, so the argmax moved between two sessions on two machines) and tends to land
on an inert λ.

Prints a Markdown table of every λ and the choice. With --check PIPELINE..., fails
when a pipeline uses a λ the sweep did not try, or one whose rsum is more than one
standard error below the best; a shipped λ inside that band but other than this
machine's choice is accepted with a note (another CPU rounds differently).

    .venv/bin/python scripts/choose_lambda.py RUN_DIR [--check pipelines/table1.pipe ...]
"""
import math
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


def lam(variant):
    return float(variant.split(" ")[1])


def choose(table):
    """Per penalty: the chosen λ (a string as written), the band of λ within one
    standard error of the best, and the rows sorted by λ."""
    choices, bands, rows = {}, {}, []
    ft = table.filter(pl.col("variant") == "ft")
    for method in ["EWC", "MAS"]:
        sub = table.filter(pl.col("variant").str.starts_with(method + " ")).to_dicts()
        sub.sort(key=lambda r: lam(r["variant"]))
        best = max(sub, key=lambda r: r["mean"])
        floor = best["mean"] - best["std"] / math.sqrt(best["seeds"])
        band = [r for r in sub if r["mean"] >= floor]
        chosen = max(band, key=lambda r: lam(r["variant"]))
        choices[method.lower()] = chosen["variant"].split(" ")[1]
        bands[method.lower()] = {lam(r["variant"]) for r in band}
        for r in sub:
            r["best"] = r is best
            r["in_band"] = r in band
        rows.extend(sub)
    return choices, bands, rows, ft.row(0, named=True) if ft.height else None


def main(argv):
    run_dir = argv[1]
    table = rsum_by_variant(run_dir)
    choices, bands, rows, ft = choose(table)
    print("| variant | validation rsum (mean ± std over seeds) | |")
    print("| --- | --- | --- |")
    if ft:
        print(f"| ft | {ft['mean']:.1f} ± {ft['std']:.1f} | |")
    for r in rows:
        method, value = r["variant"].split(" ")
        marks = []
        if r["best"]:
            marks.append("best mean")
        if r["in_band"]:
            marks.append("within 1 SE")
        if value == choices[method.lower()]:
            marks.append("**chosen**")
        print(f"| {r['variant']} | {r['mean']:.1f} ± {r['std']:.1f} | {', '.join(marks)} |")
    print()
    print("chosen (one-standard-error rule): " + ", ".join(f"{m} λ = {v}" for m, v in choices.items()))
    if "--check" in argv:
        bad, notes = [], []
        for path in argv[argv.index("--check") + 1:]:
            text = Path(path).read_text()
            for method, value in choices.items():
                for found in re.findall(rf"{method}\(lambda = ([0-9.e+-]+)", text):
                    if float(found) == float(value):
                        continue
                    if float(found) in bands[method]:
                        notes.append(f"{path}: {method}(lambda = {found}) is within one standard error "
                                     f"of the best here; this machine's sweep chose {value}")
                    else:
                        bad.append(f"{path}: {method}(lambda = {found}) is not within one standard "
                                   f"error of the best validation rsum; the sweep chose {value}")
        for line in dict.fromkeys(notes):
            print("note: " + line, file=sys.stderr)
        if bad:
            print("\n".join(bad), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
