"""The dataset build scripts, end to end:
- rebuilding the shipped emoji benchmark from the registries reproduces its raw lists
  byte for byte and its feature tables to within f16 rounding;
- an Openclipart build on a sample of 48 drawings (Debian's openclipart-svg,
  rasterised with resvg) validates, shows its six tasks, and runs a pipeline.
Both fetch what they need (npm, PyPI, apt); they take about three minutes together.
"""
import json
import os
import pathlib
import subprocess

import numpy as np
import pyarrow.ipc as ipc
import pytest
from summary_check import (check_summary_against_recall, check_summary_against_zeroshot,
                           check_zeroshot_against_embeddings)

REPO = pathlib.Path(__file__).resolve().parents[2]
LETHE = REPO / "target" / "release" / "lethe"
ENV = dict(os.environ, LETHE_ENCODERS=str(REPO / "target" / "test-encoders"))


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, env=ENV, **kw)


def table(path):
    return ipc.open_file(path).read_all()


def features(t):
    dim = t.schema.field("feature").type.list_size
    return t.column("feature").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def test_emoji_rebuild_reproduces_the_shipped_tables(tmp_path):
    run(REPO / "datasets" / "emoji" / "build.sh", tmp_path)
    shipped = REPO / "datasets" / "emoji"
    for name in ("images.jsonl", "captions.jsonl"):
        assert (tmp_path / "raw" / name).read_bytes() == (shipped / "raw" / name).read_bytes(), name
    for name in ("images.arrow", "captions.arrow", "prompts.arrow", "pseudo.arrow"):
        new, old = table(tmp_path / name), table(shipped / name)
        assert new.schema.remove_metadata() == old.schema.remove_metadata(), name
        for column in new.column_names:
            if column != "feature":
                assert new.column(column).to_pylist() == old.column(column).to_pylist(), (name, column)
        a, b = features(new).astype(np.float32), features(old).astype(np.float32)
        assert a.shape == b.shape
        # Within f16 rounding: at most one f16 step apart at each value's magnitude,
        # with a floor of 1e-4 of the table's largest value: another CPU's kernels
        # round the float32 sums differently (identical on the machine that built
        # the shipped tables), which near zero can exceed the step of a tiny value.
        step = np.spacing(np.abs(b).astype(np.float16)).astype(np.float32)
        floor = 1e-4 * np.max(np.abs(b))
        worst = np.max(np.abs(a - b) - np.maximum(step, floor))
        print(f"{name}: max |new - shipped| = {np.max(np.abs(a - b)):.3g}; identical {np.mean(a == b):.4%}")
        assert worst <= 0, f"{name}: features differ by more than f16 rounding"
        cosine = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert np.min(cosine) > 0.99999, f"{name}: a feature row changed direction"


PIPE = """pipeline "openclipart-sample" {
    dataset = "openclipart.yaml"
    split   = "categories"
    tasks   = [animals, plants, food, people, transportation, buildings]
    model {
        image = mlp(hidden = [64], embed = 32)
        text  = mlp(hidden = [64], embed = 32)
    }
    train { epochs = 3; batch = 8 }
    index = frozen
}
"""


def test_openclipart_sample_builds_validates_and_runs(tmp_path):
    sample = tmp_path / "openclipart"
    out = run(REPO / "datasets" / "openclipart" / "build.sh", "--sample", "48", sample).stdout
    assert "48 drawings" in out
    assert "48 images x 1280" in out
    run(LETHE, "validate", sample / "openclipart.yaml")
    inspect = run(LETHE, "data", "inspect", sample / "openclipart.yaml").stdout
    tasks = ["animals", "plants", "food", "people", "transportation", "buildings"]
    for task in tasks:
        assert task in inspect
    captions = table(sample / "captions.arrow")
    assert set(captions.column("kind").to_pylist()) <= {"title", "keywords", "description"}
    assert all(text.isascii() for text in captions.column("text").to_pylist())
    images = table(sample / "images.arrow")
    f = features(images).astype(np.float32)
    # Rendered drawings, not blank canvases: the features differ from image to image.
    assert np.min(np.linalg.norm(f - f.mean(axis=0), axis=1)) > 0
    (sample / "sample.pipe").write_text(PIPE)
    run(LETHE, "run", sample / "sample.pipe", "--out", tmp_path / "runs", "--cache", tmp_path / "cache", "--quiet")
    recall = table(next((tmp_path / "runs").glob("openclipart-sample/*/recall.arrow")))
    check_summary_against_recall(next((tmp_path / "runs").glob("openclipart-sample/*")))
    assert set(recall.column("eval_task").to_pylist()) == set(tasks) | {"all"}


def test_fashion_mnist_sample_is_a_downstream_zero_shot_set(tmp_path):
    sample = tmp_path / "fashion-mnist"
    out = run(REPO / "datasets" / "fashion-mnist" / "build.sh", "--sample", "60", sample).stdout
    assert "60 images x 1280" in out and "10 prompts of 1 class set x 384" in out, out
    run(LETHE, "validate", sample / "fashion-mnist.yaml")
    images = [json.loads(line) for line in (sample / "raw" / "images.jsonl").read_text().splitlines()]
    labels = {"fashion-mnist/label": {i["id"]: i["label"] for i in images}}
    assert len(set(labels["fashion-mnist/label"].values())) == 10
    emoji = REPO / "datasets" / "emoji" / "emoji.yaml"
    (tmp_path / "down.pipe").write_text(f"""pipeline "down" {{
    dataset = "{emoji}"
    split   = "sevige"
    tasks   = [animals, vehicles, clothes]
    model {{ image = mlp(hidden = [64], embed = 32); text = mlp(hidden = [64], embed = 32) }}
    train {{ epochs = 1; batch = 32 }}
    evaluate {{ downstream = ["{sample / 'fashion-mnist.yaml'}"] }}
}}
""")
    run(LETHE, "run", tmp_path / "down.pipe", "--keep-embeddings", "--out", tmp_path / "runs",
        "--cache", tmp_path / "cache", "--quiet")
    run_dir = next((tmp_path / "runs").glob("down/*"))
    zs = table(run_dir / "zeroshot.arrow")
    assert set(zs.column("task").to_pylist()) == {"fashion-mnist"}
    assert set(zs.column("n_images").to_pylist()) == {60}
    # Stages 0..3, top-1 and top-5.
    assert check_zeroshot_against_embeddings(run_dir, labels) == 4 * 2
    assert check_summary_against_zeroshot(run_dir) == 2


@pytest.fixture(autouse=True, scope="module")
def release_build():
    subprocess.run(["cargo", "build", "-q", "--release", "--bin", "lethe"], cwd=REPO, check=True)
