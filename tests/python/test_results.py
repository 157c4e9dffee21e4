"""Our Arrow tables, read by pyarrow, polars and DuckDB; and every recall, rank and
matrix figure recomputed by an independent numpy implementation.

Run by scripts/test-python (which installs the packages) after `cargo build --release`.
"""
import json
import math
import os
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from summary_check import check_summary_against_recall

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(os.environ.get("LETHE_BIN", REPO / "target" / "release" / "lethe"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    subprocess.run(
        [str(LETHE), "run", str(REPO / "pipelines" / "synthetic-small.pipe"), "--keep-embeddings",
         "--out", str(tmp / "runs"), "--cache", str(tmp / "cache"), "--quiet"],
        check=True, cwd=tmp,
    )
    (run,) = list((tmp / "runs" / "synthetic-small").iterdir())
    return run


def read(run_dir, name):
    with open(run_dir / name, "rb") as f:
        return ipc.open_file(f).read_all()


EXPECTED = {
    "recall.arrow": {
        "run_id": pa.utf8(), "pipeline": pa.utf8(), "variant": pa.utf8(), "seed": pa.uint64(),
        "train.regularizer": pa.utf8(), "index": pa.utf8(), "stage": pa.uint64(), "stage_task": pa.utf8(),
        "eval_task": pa.utf8(), "gallery": pa.utf8(), "direction": pa.utf8(), "k": pa.uint64(),
        "recall": pa.float64(), "median_rank": pa.float64(), "mean_rank": pa.float64(),
        "n_queries": pa.uint64(), "gallery_size": pa.uint64(),
    },
    "summary.arrow": {
        "seed": pa.uint64(), "statistic": pa.utf8(), "n_seeds": pa.uint64(), "direction": pa.utf8(),
        "gallery": pa.utf8(), "k": pa.uint64(), "metric": pa.utf8(), "formula": pa.utf8(), "value": pa.float64(),
    },
    "train_log.arrow": {
        "model": pa.utf8(), "stage": pa.uint64(), "task": pa.utf8(), "epoch": pa.uint64(), "step": pa.uint64(),
        "loss": pa.float64(), "task_loss": pa.float64(), "lr": pa.float64(), "grad_norm": pa.float64(),
        "seconds": pa.float64(), "term_ewc": pa.float64(),
    },
    "drift.arrow": {
        "stage": pa.uint64(), "task": pa.utf8(), "task_stage": pa.uint64(), "direction": pa.utf8(),
        "metric": pa.utf8(), "modality": pa.utf8(), "value": pa.float64(),
    },
    "embeddings.arrow": {
        "stage": pa.uint64(), "model_stage": pa.uint64(), "model": pa.utf8(), "task": pa.utf8(),
        "modality": pa.utf8(), "role": pa.utf8(), "item_id": pa.utf8(), "image_id": pa.utf8(),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tables_have_documented_columns_and_types(run_dir, name):
    table = read(run_dir, name)
    assert table.num_rows > 0
    for column, dtype in EXPECTED[name].items():
        assert table.schema.field(column).type == dtype, (name, column)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    assert meta["lethe.pipeline"] == "synthetic-small"
    assert meta["lethe.run_id"] == run_dir.name
    # The same run id in the rows and in the JSON sidecar.
    assert set(table.column("run_id").to_pylist()) == {run_dir.name}
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == run_dir.name


def test_polars_and_duckdb_read_the_tables(run_dir):
    recall = pl.read_ipc(run_dir / "recall.arrow")
    lazy = pl.scan_ipc(run_dir / "summary.arrow").filter(pl.col("statistic") == "mean").collect()
    assert recall.height == read(run_dir, "recall.arrow").num_rows
    assert set(lazy["metric"]) >= {"average", "forgetting", "bwt", "fwt", "total"}
    vectors = pl.read_ipc(run_dir / "embeddings.arrow")
    assert vectors.schema["vector"] == pl.Array(pl.Float32, 64)
    arrow_recall = read(run_dir, "recall.arrow")
    best = duckdb.sql(
        "select variant, avg(recall) as r from arrow_recall where k = 10 and gallery = 'per_task' "
        "group by variant order by variant").fetchall()
    assert [v for v, _ in best] == ["EWC, frozen", "EWC, reindex", "ft, frozen", "ft, reindex"]
    assert all(0 <= r <= 100 for _, r in best)


def numpy_ranks(queries, targets, gallery, shows, eps=0.0):
    """1-based rank of the best correct item, ties going to the earlier gallery item,
    computed in float64. With eps > 0, returns (lowest, highest) ranks any rounding of
    the similarities within eps could give: lethe computes in float32."""
    sims = queries.astype(np.float64) @ gallery.T.astype(np.float64)
    lo, hi = [], []
    for i in range(len(queries)):
        row = sims[i]
        correct = np.flatnonzero(shows == targets[i])
        best = correct[np.argmax(row[correct])]  # argmax: first of equal maxima
        s = row[best]
        if eps == 0.0:
            rank = np.count_nonzero(row > s) + np.count_nonzero(row[:best] == s) + 1
            lo.append(rank)
            hi.append(rank)
        else:
            # Correct items near the best could rank first instead; others may swap order.
            lo.append(np.count_nonzero(row > s + eps) + 1)
            hi.append(np.count_nonzero(row >= s - eps) - np.count_nonzero(row[correct] >= s - eps) + 1)
    return (np.array(lo), np.array(hi)) if eps else np.array(lo)


def figures(ranks, k):
    r0 = ranks - 1
    return 100.0 * np.mean(ranks <= k), math.floor(np.median(r0)) + 1, np.mean(r0) + 1


def test_every_recall_is_recomputed_from_the_embeddings(run_dir):
    emb = pl.read_ipc(run_dir / "embeddings.arrow")
    recall = pl.read_ipc(run_dir / "recall.arrow")
    tasks = json.loads((run_dir / "pipeline.json").read_text())[0]["tasks"]
    checked = 0
    for (variant, seed, stage), group in emb.group_by(["variant", "seed", "stage"]):
        seen = tasks if group["stage"][0] == len(tasks) else tasks[:stage]
        for direction, qmod, gmod in [("im2txt", "image", "text"), ("txt2im", "text", "image")]:
            part = lambda role, mod, task: group.filter(  # noqa: E731
                (pl.col("role") == role) & (pl.col("modality") == mod) & (pl.col("task") == task))
            for j, task in enumerate(tasks):
                q = part("query", qmod, task)
                queries = np.stack(q["vector"].to_numpy())
                targets = (q["item_id"] if qmod == "image" else q["image_id"]).to_numpy()
                for scope in ["per_task", "union"]:
                    members = [task] if scope == "per_task" else [t for t in tasks if t in seen or t == task]
                    g = pl.concat([part("gallery", gmod, t) for t in members])
                    gallery = np.stack(g["vector"].to_numpy())
                    lo, hi = numpy_ranks(queries, targets, gallery, g["image_id"].to_numpy(), eps=1e-5)
                    rows = recall.filter(
                        (pl.col("variant") == variant) & (pl.col("seed") == seed) & (pl.col("stage") == stage)
                        & (pl.col("eval_task") == task) & (pl.col("gallery") == scope) & (pl.col("direction") == direction))
                    assert rows.height == 3
                    for row in rows.iter_rows(named=True):
                        # Bounds: the best and worst case of every near-tie.
                        r_hi, med_lo, mean_lo = figures(lo, row["k"])
                        r_lo, med_hi, mean_hi = figures(hi, row["k"])
                        assert r_lo - 1e-9 <= row["recall"] <= r_hi + 1e-9, (row, r_lo, r_hi)
                        assert med_lo <= row["median_rank"] <= med_hi
                        assert mean_lo - 1e-9 <= row["mean_rank"] <= mean_hi + 1e-9
                        if (lo == hi).all():
                            assert row["recall"] == pytest.approx(r_hi, abs=1e-9)
                        assert row["n_queries"] == len(queries) and row["gallery_size"] == len(gallery)
                        checked += 1
    # Every per-task and union row of every variant, seed, stage, task, direction and K.
    assert checked == recall.filter(pl.col("eval_task") != "all").height
    # 4 variants, 2 seeds, stages 0 (untrained) to 3, 3 tasks, 2 galleries, 2 directions, 3 Ks.
    assert checked == 4 * 2 * 4 * 3 * 2 * 2 * 3


def test_matrix_figures_are_recomputed_from_recall(run_dir):
    # Average, forgetting (from the stage that learned the task), BWT and FWT.
    assert check_summary_against_recall(run_dir) > 0
    summary = pl.read_ipc(run_dir / "summary.arrow").filter(pl.col("statistic") == "value")
    means = pl.read_ipc(run_dir / "summary.arrow").filter(pl.col("statistic") == "mean")
    for row in means.iter_rows(named=True):
        values = summary.filter((pl.col("variant") == row["variant"]) & (pl.col("metric") == row["metric"])
                                & (pl.col("direction") == row["direction"]) & (pl.col("gallery") == row["gallery"])
                                & (pl.col("k") == row["k"]))["value"].to_numpy()
        assert row["value"] == pytest.approx(values.mean(), abs=1e-9)


def test_ranks_with_ties_and_several_captions_per_image(tmp_path):
    rng = np.random.default_rng(3)
    # Vectors on a coarse grid: many exact ties. 40 images, 1 to 4 captions each.
    images = [f"i{i}" for i in range(40)]
    captions = [(f"c{i}-{c}", img) for i, img in enumerate(images) for c in range(1 + i % 4)]
    # Integer vectors: every product is exact in float32 and float64 alike.
    grid = lambda n: rng.integers(-1, 2, size=(n, 8)).astype(np.float32)  # noqa: E731
    for direction in ["im2txt", "txt2im"]:
        if direction == "im2txt":
            queries, targets = grid(len(images)), np.array(images)
            gallery, shows = grid(len(captions)), np.array([img for _, img in captions])
        else:
            queries, targets = grid(len(captions)), np.array([img for _, img in captions])
            gallery, shows = grid(len(images)), np.array(images)
        roles = ["query"] * len(queries) + ["gallery"] * len(gallery)
        vectors = np.concatenate([queries, gallery])
        table = pa.table({
            "role": roles,
            "image_id": list(targets) + list(shows),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), 8),
        })
        path = tmp_path / f"{direction}.arrow"
        with ipc.new_file(path, table.schema) as w:
            w.write_table(table)
        out = subprocess.run([str(REPO / "target" / "release" / "examples" / "ranks_from_arrow"), str(path)],
                             check=True, capture_output=True, text=True).stdout
        lethe = json.loads(out)
        expected = numpy_ranks(queries, targets, gallery, shows)
        assert lethe["ranks"] == expected.tolist()
        sims = queries @ gallery.T
        assert sum(len(set(row)) < len(row) for row in sims.tolist()) > len(sims) // 2, "the case must contain ties"
        for f in lethe["figures"]:
            r, med, mean = figures(expected, f["k"])
            assert f["recall"] == pytest.approx(r, abs=1e-9)
            assert f["median_rank"] == med and f["mean_rank"] == pytest.approx(mean)
