"""Print a run's results in the seed paper's layout with polars.

    python examples/analysis.py runs/<pipeline>/<run-id> [--k 10] [--direction im2txt]

Rows: the tasks (recall on each after the last stage, task known), their average,
and the union row (task unknown, all queries pooled). Columns: the variants,
grouped by indexing policy when the pipeline sweeps it; mean ± std over seeds.
"""
import argparse
from pathlib import Path

import polars as pl

parser = argparse.ArgumentParser()
parser.add_argument("run", type=Path)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--direction", default="im2txt", choices=["im2txt", "txt2im"])
args = parser.parse_args()

recall = pl.read_ipc(args.run / "recall.arrow").filter(
    (pl.col("k") == args.k) & (pl.col("direction") == args.direction))
last = recall.group_by("variant", "seed").agg(pl.col("stage").max().alias("last"))
final = recall.join(last, on=["variant", "seed"]).filter(pl.col("stage") == pl.col("last"))
tasks = final.filter(pl.col("eval_task") != "all")["eval_task"].unique(maintain_order=True).to_list()

per_task = final.filter((pl.col("gallery") == "per_task") & (pl.col("eval_task") != "all"))
rows = per_task.select("variant", "seed", pl.col("eval_task").alias("row"), "recall")
average = per_task.group_by("variant", "seed").agg(pl.col("recall").mean()).with_columns(pl.lit("average").alias("row"))
union = final.filter((pl.col("gallery") == "union") & (pl.col("eval_task") == "all")).select(
    "variant", "seed", pl.lit("total (union)").alias("row"), "recall")
table = pl.concat([rows, average.select(rows.columns), union])
summary = table.group_by("variant", "row").agg(
    pl.col("recall").mean().alias("mean"), pl.col("recall").std().alias("std"))
cell = pl.when(pl.col("std").is_null()).then(pl.col("mean").round(1).cast(pl.Utf8)).otherwise(
    pl.format("{} ± {}", pl.col("mean").round(1), pl.col("std").round(1)))
wide = summary.with_columns(cell.alias("cell")).pivot(on="variant", index="row", values="cell")
order = {name: i for i, name in enumerate(tasks + ["average", "total (union)"])}
wide = wide.sort(pl.col("row").replace_strict(order, default=99))
variants = sorted(c for c in wide.columns if c != "row")
# Group columns by the indexing policy, when it is part of the label.
variants.sort(key=lambda v: ("reindex" in v, v))
pl.Config.set_tbl_rows(100)
pl.Config.set_tbl_cols(100)
print(f"Recall@{args.k}, {args.direction}, after the last stage (mean ± std over seeds)")
print(wide.select(["row"] + variants))
