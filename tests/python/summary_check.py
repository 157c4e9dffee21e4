"""The continual-learning figures of summary.arrow, recomputed from recall.arrow with
numpy for any run directory: every variant, seed, direction, gallery and K.

Formulas (docs/methods.md), with R[l][j] the recall on task j after stage l, stage 0
the untrained model and T the last stage:
  average    mean_j R[T][j]
  forgetting mean_{j<T} (max_{j<=l<T} R[l][j] - R[T][j])   (Chaudhry et al.)
  bwt        mean_{j<T} (R[T][j] - R[j][j])                  (Lopez-Paz and Ranzato)
  fwt        mean_{j>=2} (R[j-1][j] - R[0][j])               (Lopez-Paz and Ranzato)
"""
import json
from pathlib import Path

import numpy as np
import polars as pl


def expected_figures(R, T):
    """R: (T+1) x T array indexed by stage (row 0 the untrained model)."""
    out = {"average": R[T].mean()}
    if T >= 2:
        out["forgetting"] = np.mean([R[j:T, j - 1].max() - R[T, j - 1] for j in range(1, T)])
        out["bwt"] = np.mean([R[T, j - 1] - R[j, j - 1] for j in range(1, T)])
        out["fwt"] = np.mean([R[j - 1, j - 1] - R[0, j - 1] for j in range(2, T + 1)])
    return out


def check_summary_against_recall(run_dir):
    """Asserts every figure of summary.arrow; returns how many were checked."""
    run_dir = Path(run_dir)
    recall = pl.read_ipc(run_dir / "recall.arrow").filter(pl.col("eval_task") != "all")
    summary = pl.read_ipc(run_dir / "summary.arrow").filter(pl.col("statistic") == "value")
    variants = {(v["label"], v["seed"]): v for v in json.loads((run_dir / "pipeline.json").read_text())}
    checked = 0
    for row in summary.filter(pl.col("metric") != "total").iter_rows(named=True):
        v = variants[(row["variant"], row["seed"])]
        tasks = v["tasks"]
        T = len(tasks)
        sel = recall.filter((pl.col("variant") == row["variant"]) & (pl.col("seed") == row["seed"])
                            & (pl.col("direction") == row["direction"]) & (pl.col("gallery") == row["gallery"])
                            & (pl.col("k") == row["k"]))
        R = np.full((T + 1, T), np.nan)
        for r in sel.iter_rows(named=True):
            R[r["stage"], tasks.index(r["eval_task"])] = r["recall"]
        if v["schedule"] == "joint":
            assert row["metric"] == "average", row
        expected = expected_figures(R, T)[row["metric"]]
        assert abs(row["value"] - expected) < 1e-9, (row, expected)
        checked += 1
    assert checked > 0
    return checked
