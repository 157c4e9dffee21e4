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
    # Zero-shot figures come from zeroshot.arrow (check_summary_against_zeroshot).
    summary = summary.filter(pl.col("direction") != "zeroshot")
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


def check_summary_against_zeroshot(run_dir):
    """The zero-shot figures of summary.arrow (direction `zeroshot`, gallery the
    class set, k the K of top-K) from the accuracy matrices of zeroshot.arrow."""
    run_dir = Path(run_dir)
    accuracy = pl.read_ipc(run_dir / "zeroshot.arrow")
    summary = pl.read_ipc(run_dir / "summary.arrow").filter(
        (pl.col("statistic") == "value") & (pl.col("direction") == "zeroshot"))
    variants = {(v["label"], v["seed"]): v for v in json.loads((run_dir / "pipeline.json").read_text())}
    checked = 0
    for row in summary.iter_rows(named=True):
        tasks = variants[(row["variant"], row["seed"])]["tasks"]
        if "/" in row["gallery"]:
            # A downstream set's class set (`dataset/set`): its one "task" is the
            # dataset, and its figure the accuracy after the last stage.
            sel = accuracy.filter((pl.col("variant") == row["variant"]) & (pl.col("seed") == row["seed"])
                                  & (pl.col("class_set") == row["gallery"]) & (pl.col("k") == row["k"]))
            last = sel.filter(pl.col("stage") == sel["stage"].max())
            assert row["metric"] == "average", row
            assert abs(row["value"] - last["accuracy"].item()) < 1e-9, (row, last)
            checked += 1
            continue
        T = len(tasks)
        sel = accuracy.filter((pl.col("variant") == row["variant"]) & (pl.col("seed") == row["seed"])
                              & (pl.col("class_set") == row["gallery"]) & (pl.col("k") == row["k"]))
        A = np.full((T + 1, T), np.nan)
        for r in sel.iter_rows(named=True):
            A[r["stage"], tasks.index(r["task"])] = r["accuracy"]
        expected = expected_figures(A, T)[row["metric"]]
        assert abs(row["value"] - expected) < 1e-9, (row, expected)
        checked += 1
    assert checked > 0
    return checked


def check_zeroshot_against_embeddings(run_dir, labels):
    """Every accuracy of zeroshot.arrow from the kept embeddings (roles `prompt` and
    `zeroshot`), `labels[class_set][image_id]` giving each image's class; ties go
    to the class listed first. Returns how many accuracies were checked."""
    run_dir = Path(run_dir)
    acc = pl.read_ipc(run_dir / "zeroshot.arrow")
    emb = pl.read_ipc(run_dir / "embeddings.arrow")
    checked = 0
    for (variant, seed, class_set, stage), rows in acc.group_by(
            ["variant", "seed", "class_set", "stage"], maintain_order=True):
        mine = emb.filter((pl.col("variant") == variant) & (pl.col("seed") == seed) & (pl.col("stage") == stage))
        prompts = mine.filter((pl.col("role") == "prompt") & (pl.col("task") == class_set))
        classes = prompts["item_id"].to_list()
        assert classes == sorted(set(labels[class_set].values())), "every value, sorted"
        P = np.stack(prompts["vector"].to_numpy()).astype(np.float64)
        for r in rows.iter_rows(named=True):
            images = mine.filter((pl.col("role") == "zeroshot") & (pl.col("task") == r["task"]))
            assert len(images) == r["n_images"] > 0
            X = np.stack(images["vector"].to_numpy()).astype(np.float64)
            truth = np.array([classes.index(labels[class_set][i]) for i in images["item_id"].to_list()])
            S = X @ P.T
            own = S[np.arange(len(truth)), truth][:, None]
            index = np.arange(len(classes))[None, :]
            rank = ((S > own) | ((S == own) & (index < truth[:, None]))).sum(axis=1)
            expected = 100.0 * np.mean(rank < r["k"])
            assert abs(r["accuracy"] - expected) < 1e-9, (r, expected)
            assert r["n_classes"] == len(classes)
            checked += 1
    return checked
