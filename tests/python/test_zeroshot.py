"""Zero-shot classification recomputed with numpy from the embeddings a run kept:
every accuracy of zeroshot.arrow from the prompts and images the run compared
(embeddings.arrow, roles `prompt` and `zeroshot`) and each image's class read from
the shipped raw list; every zero-shot summary figure from the accuracy matrix."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from summary_check import (check_summary_against_recall, check_summary_against_zeroshot,
                           check_zeroshot_against_embeddings)

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(os.environ.get("LETHE_BIN", REPO / "target" / "release" / "lethe"))
EMOJI = REPO / "datasets" / "emoji"

PIPE = f"""pipeline "zs" {{
    dataset = "{EMOJI / 'emoji.yaml'}"
    split   = "sevige"
    tasks   = [animals, vehicles, clothes]
    model {{ image = mlp(hidden = [128], embed = 64); text = mlp(hidden = [128], embed = 64) }}
    train {{ epochs = 2; batch = 32 }}
    evaluate {{ recall = [1, 10]; zeroshot = [subgroup, group] }}
    seed    = [0, 1]
}}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zs")
    (tmp / "zs.pipe").write_text(PIPE)
    subprocess.run([str(LETHE), "run", "zs.pipe", "--keep-embeddings", "--quiet"], check=True, cwd=tmp)
    (run,) = list((tmp / "runs" / "zs").iterdir())
    return run


def classes_of_images():
    out = {}
    with open(EMOJI / "raw" / "images.jsonl") as f:
        for line in f:
            r = json.loads(line)
            out[r["id"]] = {"subgroup": r["subgroup"], "group": r["group"]}
    return out


def test_every_accuracy_is_recomputed_from_the_kept_embeddings(run_dir):
    images = classes_of_images()
    labels = {s: {i: c[s] for i, c in images.items()} for s in ("subgroup", "group")}
    # 2 seeds x 2 class sets x stages 0..3 x 3 tasks x top-1 and top-5.
    assert check_zeroshot_against_embeddings(run_dir, labels) == 2 * 2 * 4 * 3 * 2


def test_zero_shot_summary_figures_follow_the_accuracy_matrix(run_dir):
    # average, forgetting, bwt, fwt for 2 seeds x 2 class sets x 2 K.
    assert check_summary_against_zeroshot(run_dir) == 2 * 2 * 2 * 4
    assert check_summary_against_recall(run_dir) > 0
    # Top-5 is never below top-1.
    acc = pl.read_ipc(run_dir / "zeroshot.arrow")
    wide = acc.pivot(on="k", index=["variant", "seed", "class_set", "stage", "task"], values="accuracy")
    assert (wide["5"] >= wide["1"]).all()
