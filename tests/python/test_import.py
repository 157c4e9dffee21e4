"""`lethe import coco` and `lethe data inspect`, checked against an independent
reading of the annotation JSON: a random COCO-format fixture (JPEGs by Pillow,
captions, instances, Karpathy's split) is imported, and every task's image and
caption counts per part are recomputed here from the JSON alone, with the
manifest's rules (dominant supercategory with ties dropped, caption words with
the first task winning) written out again in Python. Parquet tables written by
pyarrow (the way Hugging Face datasets ship) are read by lethe as they are.
"""
import json
import pathlib
import random
import re
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
LETHE = REPO / "target" / "release" / "lethe"

CATEGORIES = [
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (6, "bus", "vehicle"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"),
    (52, "banana", "food"), (53, "pizza", "food"), (61, "cake", "food"), (62, "chair", "furniture"),
]
WORDS = ["dog", "cat", "horse", "car", "bus", "train", "pizza", "cake"] + [
    "man", "woman", "table", "street", "field", "room", "sky", "tree", "wall", "window", "beach", "city",
    "kitchen", "grass", "water", "snow", "road", "house", "light", "hat", "dogsled", "carpet", "cakewalk"]


def run(*args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)


def write_fixture(root, n=90, seed=3):
    """A COCO-format fixture of n images: returns the Karpathy split of each id."""
    rng = random.Random(seed)
    (root / "annotations").mkdir(parents=True)
    parts = {}
    karpathy = []
    for name, ids in (("train", range(1, n * 2 // 3 + 1)), ("val", range(n * 2 // 3 + 1, n + 1))):
        folder = root / f"{name}2014"
        folder.mkdir()
        images, captions, instances = [], [], []
        for i in ids:
            file_name = f"COCO_{name}2014_{i:012d}.jpg"
            size = (rng.randint(20, 80), rng.randint(20, 80))
            Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))).save(folder / file_name)
            images.append({"id": i, "file_name": file_name, "height": size[1], "width": size[0]})
            sentences = []
            for k in range(5):
                text = " ".join(rng.choice(WORDS) for _ in range(2))
                captions.append({"id": i * 10 + k, "image_id": i, "caption": f"a {text} "})
                sentences.append({"raw": f"a {text} ", "sentid": i * 10 + k})
            for m in range(rng.randint(0, 4)):
                category = rng.choice(CATEGORIES)
                instances.append({"id": i * 100 + m, "image_id": i, "category_id": category[0],
                                  "segmentation": [[0, 0, 1, 1]], "area": 1.0, "bbox": [0, 0, 1, 1], "iscrowd": 0})
            split = rng.choice(["train", "restval", "val", "test", "test"])
            parts[i] = split
            karpathy.append({"cocoid": i, "filepath": f"{name}2014", "filename": file_name, "split": split,
                             "imgid": i, "sentences": sentences})
        (root / "annotations" / f"captions_{name}2014.json").write_text(json.dumps({"images": images, "annotations": captions}))
        categories = [{"id": c, "name": nm, "supercategory": s} for c, nm, s in CATEGORIES]
        (root / "annotations" / f"instances_{name}2014.json").write_text(
            json.dumps({"images": images, "annotations": instances, "categories": categories}))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    return parts


def import_fixture(tmp_path):
    root = tmp_path / "coco"
    parts = write_fixture(root)
    out = tmp_path / "dataset"
    a = root / "annotations"
    run(LETHE, "import", "coco",
        "--captions", a / "captions_train2014.json", "--captions", a / "captions_val2014.json",
        "--instances", a / "instances_train2014.json", "--instances", a / "instances_val2014.json",
        "--images", root / "train2014", "--images", root / "val2014",
        "--karpathy", root / "dataset_coco.json", "-o", out)
    return root, parts, out / "coco.yaml"


def inspect_tables(text):
    """Split name -> task -> the eight counts of `lethe data inspect`."""
    splits, current = {}, None
    for line in text.splitlines():
        m = re.match(r"split `([^`]+)`", line)
        if m:
            current = splits.setdefault(m.group(1), {})
            continue
        fields = line.split()
        if current is not None and len(fields) == 9 and fields[8].isdigit():
            current[fields[0]] = [None if f == "-" else int(f) for f in fields[1:]]
    return splits


def expected_counts(root, parts, tasks_of_image, evaluate):
    """The eight counts per task, from the JSON, in `lethe data inspect`'s
    order: train, test and val images and captions (test not loaded when
    evaluating on val), then images and captions in all."""
    captions = {}
    for name in ("train", "val"):
        for c in json.loads((root / "annotations" / f"captions_{name}2014.json").read_text())["annotations"]:
            captions[c["image_id"]] = captions.get(c["image_id"], 0) + 1
    part_of = {i: {"restval": "train"}.get(p, p) for i, p in parts.items()}
    counts = {}
    for image, task in tasks_of_image.items():
        row = counts.setdefault(task, {"train": [0, 0], "val": [0, 0], "test": [0, 0]})
        row[part_of[image]][0] += 1
        row[part_of[image]][1] += captions[image]
    table = {}
    for task, row in counts.items():
        held_test = row["test"] if evaluate == "test" else [0, 0]
        total = [row["train"][k] + row["val"][k] + held_test[k] for k in (0, 1)]
        test = row["test"] if evaluate == "test" else [None, None]
        table[task] = row["train"] + test + row["val"] + total
    return table


def dominant_tasks(root):
    """Image -> task by dominant supercategory; a tie with another drops the image."""
    chosen = {"animal": "animals", "vehicle": "vehicles", "food": "food"}
    supers = {c: s for c, _, s in CATEGORIES}
    per_image = {}
    for name in ("train", "val"):
        data = json.loads((root / "annotations" / f"instances_{name}2014.json").read_text())
        for a in data["annotations"]:
            per_image.setdefault(a["image_id"], []).append(supers[a["category_id"]])
    tasks = {}
    for image, values in per_image.items():
        counts = {v: values.count(v) for v in set(values)}
        top = [v for v, n in counts.items() if n == max(counts.values())]
        hits = {chosen[v] for v in top if v in chosen}
        if len(hits) == 1 and len(top) == 1:
            tasks[image] = hits.pop()
    return tasks


def manifest_tasks(manifest, split):
    """The task names of a split as the import wrote them (tasks the data cannot
    support are left out, and with `overlap: first` that changes who wins)."""
    lines = manifest.read_text().splitlines()
    start = lines.index(f"  {split}:")
    tasks = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        name = line.split(":")[0].strip()
        if name not in ("overlap", "evaluate", "test_images"):
            tasks.append(name)
    return tasks


def topic_tasks(root, kept):
    """Image -> first task one of whose captions names its words."""
    rules = [
        ("animals", r"(?i)\b(dogs?|cats?|horses?|birds?|cows?|sheep|elephants?|bears?|zebras?|giraffes?|puppy|puppies|kittens?)\b"),
        ("vehicles", r"(?i)\b(cars?|bus|buses|trucks?|trains?|motorcycles?|bicycles?|bikes?|airplanes?|planes?|boats?)\b"),
        ("food", r"(?i)\b(pizzas?|sandwich(es)?|cakes?|donuts?|bananas?|apples?|oranges?|broccoli|carrots?|food|meal)\b"),
    ]
    texts = {}
    for name in ("train", "val"):
        for c in json.loads((root / "annotations" / f"captions_{name}2014.json").read_text())["annotations"]:
            texts.setdefault(c["image_id"], []).append(c["caption"].strip())
    tasks = {}
    rules = [(t, p) for t, p in rules if t in kept]
    for image, captions in texts.items():
        for task, pattern in rules:
            if any(re.search(pattern, t) for t in captions):
                tasks[image] = task
                break
    return tasks


def test_inspect_counts_match_an_independent_reading_of_the_json(tmp_path):
    root, parts, manifest = import_fixture(tmp_path)
    assert "features not built yet" in run(LETHE, "validate", manifest).stdout
    tables = inspect_tables(run(LETHE, "data", "inspect", manifest).stdout)
    assert set(tables) == {"secoco", "secoco-val", "topics"}
    assert tables["secoco"] == expected_counts(root, parts, dominant_tasks(root), "test")
    assert tables["secoco-val"] == expected_counts(root, parts, dominant_tasks(root), "val")
    assert manifest_tasks(manifest, "secoco") == ["animals", "vehicles", "food"]
    kept = manifest_tasks(manifest, "topics")
    assert len(kept) >= 2, kept
    assert tables["topics"] == expected_counts(root, parts, topic_tasks(root, kept), "test")


def features(n, dim, rng):
    return rng.standard_normal((n, dim)).astype(np.float32)


def test_parquet_tables_from_pyarrow_are_read_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"img{i}" for i in range(n)]
    groups = [["a", "b"][i % 2] for i in range(n)]
    images = pa.table({
        "id": ids,
        "group": groups,
        "tags": [["x", "x", "y"] if i % 3 else ["y"] for i in range(n)],
        # What `datasets` writes for a list of floats: a variable-length list.
        "feature": pa.array(list(features(n, 6, rng)), type=pa.list_(pa.float32())),
    })
    caption_image = [ids[i // 2] for i in range(2 * n)]
    captions = pa.table({
        "id": [f"c{i}" for i in range(2 * n)],
        "image_id": caption_image,
        "text": ["words"] * (2 * n),
        "feature": pa.array(list(features(2 * n, 4, rng)), type=pa.list_(pa.float32(), 4)),
    })
    pq.write_table(images, tmp_path / "images.parquet")
    pq.write_table(captions, tmp_path / "captions.parquet", row_group_size=16)
    (tmp_path / "m.yaml").write_text(
        "name: hf\nimages: images.parquet\ncaptions: captions.parquet\ntest_fraction: 0.3\nsplits:\n"
        "  s:\n    a: { group: [a] }\n    b: { group: [b] }\n  tags:\n    x: { tags: [x], match: dominant }\n")
    out = run(LETHE, "data", "inspect", tmp_path / "m.yaml").stdout
    assert f"{n} images x 6-d, {2 * n} captions x 4-d" in out
    tables = inspect_tables(out)
    assert tables["s"]["a"][6] + tables["s"]["b"][6] == n
    assert tables["tags"]["x"][6] == sum(1 for i in range(n) if i % 3)
    # Codecs other than snappy are named, with the way out.
    pq.write_table(images, tmp_path / "images.parquet", compression="zstd")
    bad = subprocess.run([str(LETHE), "data", "inspect", str(tmp_path / "m.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "images.parquet: column `id` is compressed with ZSTD" in bad.stderr
    assert 'compression="snappy"' in bad.stderr
