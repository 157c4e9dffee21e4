"""A deterministic cross-check of the Table 1 peer (table1_torch.py) against a lethe
run: the parts of the protocol that involve no random stream are compared exactly,
on lethe's own trained weights, so that a disagreement of the headline recalls can
only come from training (or chance), not from the data, the model, the search or
the figures.

- recall: every model of the fine-tuning chains (`init`, then `train(k)` without a
  regularizer) and every joint model is read from lethe's cache into the peer's
  `TwoBranch`; the peer's `embed_tasks` + `evaluate` (FAISS IndexFlatIP) recompute
  every recall row of the `reindex ft`, `frozen ft`, `joint` and `joint CTNP`
  variants, which must equal lethe's `recall.arrow`.
- summary: the peer's `figures` on lethe's own recall rows must give lethe's
  `summary.arrow` values (average, total, forgetting, BWT, FWT) for every variant.
- MAS: the peer's `omega` (per-sample gradients by torch.func.vmap) on each model an
  importance(mas) node read must equal that node's estimate (minus the previous
  node's accumulation).
- EWC: the Fisher depends on the batch order (a random stream), so only its scale is
  compared: the ratio of the peer's total Fisher to lethe's on the same model.

Usage: table1_check.py RUN_DIR CACHE_DIR (a `lethe run pipelines/table1.pipe --cache
CACHE_DIR` run). Exits 1 when an exact comparison fails.
"""
import glob
import json
import os
import sys

import numpy as np
import pyarrow.ipc as ipc
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import table1_torch as peer  # noqa: E402


def main():
    run_dir, cache = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    data = peer.load_split(os.path.join(peer.REPO, peer.DATASET), peer.SPLIT)
    image_dim, text_dim = data["image_features"].shape[1], data["caption_features"].shape[1]
    nodes = {}
    for path in glob.glob(os.path.join(cache, "*", "node.json")):
        node = json.load(open(path))
        nodes[node["key"]] = node

    def model(key, share):
        m = peer.TwoBranch(image_dim, text_dim, share)
        m.load_state_dict(load_file(os.path.join(cache, key, "model.safetensors")))
        return m

    share_of = {s: label for s, label in peer.SHARES}
    # The models of the fine-tuning chains, by (share, seed, stage), and the joint ones.
    chains, joints = {}, {}
    for key, node in nodes.items():
        s = node["settings"]
        if s["kind"] not in ("init", "train"):
            continue
        share = node_share(node)
        if s["kind"] == "init":
            chains[(share, s["seed"], 0)] = key
        elif s["schedule"] == "joint":
            joints[(share, s["seed"], s["negatives"])] = key
        elif not s["regularizer"]:
            chains[(share, s["seed"], s["stage"])] = key

    recall = ipc.open_file(os.path.join(run_dir, "recall.arrow")).read_all().to_pylist()
    lethe = {}
    for r in recall:
        lethe.setdefault((r["variant"], r["seed"]), {})[
            (r["stage"], r["eval_task"], r["gallery"], r["direction"], r["k"])] = r["recall"]

    failures = 0
    compared = 0
    for (share, seed, stage), _ in sorted(chains.items()):
        if stage != 0:
            continue
        models = [model(chains[(share, seed, k)], share) for k in range(len(peer.TASKS) + 1)]
        for index in ("reindex", "frozen"):
            rows, frozen = [], {}
            for k, m in enumerate(models):
                current = peer.embed_tasks(m, data)
                if k:
                    frozen[peer.TASKS[k - 1]] = current[peer.TASKS[k - 1]]
                galleries = current if index == "reindex" else {t: frozen.get(t, current[t]) for t in peer.TASKS}
                rows += peer.evaluate(data, k, k, current, galleries, peer.DIRECTIONS)
            n, bad = compare(rows, lethe[(f"{index} ft, {share_of[share]}", seed)])
            compared, failures = compared + n, failures + len(bad)
            for b in bad[:5]:
                print(f"  {index} ft, {share_of[share]}, seed {seed}: {b}")
    for (share, seed, negatives), key in sorted(joints.items()):
        current = peer.embed_tasks(model(key, share), data)
        rows = peer.evaluate(data, len(peer.TASKS), len(peer.TASKS), current, current, peer.DIRECTIONS)
        label = "joint CTNP" if negatives == "cross_task" else "joint"
        n, bad = compare(rows, lethe[(f"{label}, {share_of[share]}", seed)])
        compared, failures = compared + n, failures + len(bad)
        for b in bad[:5]:
            print(f"  {label}, {share_of[share]}, seed {seed}: {b}")
    print(f"recall: {compared - failures}/{compared} rows recomputed by the peer from lethe's weights "
          f"equal lethe's recall.arrow")

    # The summary figures from lethe's own recall rows.
    summary = ipc.open_file(os.path.join(run_dir, "summary.arrow")).read_all().to_pylist()
    sequential = {v["label"]: v["schedule"] == "sequential" for v in peer.variants()}
    figs = {}
    for (variant, seed), rows in lethe.items():
        mine = peer.figures([key + (value,) for key, value in rows.items()], sequential[variant])
        for (d, g, k, metric), value in mine.items():
            figs[(variant, seed, d, g, k, metric)] = value
    summary_bad, summary_n = 0, 0
    for r in summary:
        if r["statistic"] != "value":
            continue
        summary_n += 1
        mine = figs.get((r["variant"], r["seed"], r["direction"], r["gallery"], r["k"], r["metric"]))
        if mine is None or abs(mine - r["value"]) > 1e-9:
            summary_bad += 1
            if summary_bad <= 5:
                print(f"  summary {r['variant']} seed {r['seed']} {r['direction']} {r['gallery']} "
                      f"R@{r['k']} {r['metric']}: lethe {r['value']}, peer {mine}")
    failures += summary_bad
    print(f"summary: {summary_n - summary_bad}/{summary_n} per-seed figures of summary.arrow equal the "
          f"peer's from the same recall rows")

    # Importance estimates on lethe's models.
    worst_mas, ratios = 0.0, []
    for key, node in nodes.items():
        s = node["settings"]
        if s["kind"] != "importance":
            continue
        train_key = node["inputs"][s["model"]]["key"]
        share = node_share(nodes[train_key])
        m = model(train_key, share)
        theirs = load_file(os.path.join(cache, key, "importance.safetensors"))
        if s["previous"] is not None:
            before = load_file(os.path.join(cache, node["inputs"][s["previous"]]["key"], "importance.safetensors"))
            theirs = {n: t - before[n] for n, t in theirs.items()}
        captions = data["tasks"][s["task"]]["train_captions"]
        if s["estimate"]["method"] == "omega":
            mine = peer.omega(m, data, captions)
            for n, t in theirs.items():
                err = float((mine[n] - t).abs().max() / t.abs().max().clamp(min=1e-30))
                worst_mas = max(worst_mas, err)
        else:
            mine = peer.fisher(m, data, captions, seed_of(nodes, train_key), s["stage"])
            ratios.append(float(sum(t.sum() for t in mine.values()) / sum(t.sum() for t in theirs.values())))
    mas_ok = worst_mas < 1e-3
    failures += 0 if mas_ok else 1
    print(f"MAS: the peer's omega equals lethe's within {worst_mas:.1e} (max abs error / max value, "
          f"every tensor of every importance(mas) node){'' if mas_ok else '  MISMATCH'}")
    if ratios:
        print(f"EWC: the peer's total Fisher / lethe's on the same models: median {np.median(ratios):.2f}, "
              f"range {min(ratios):.2f}..{max(ratios):.2f} over {len(ratios)} nodes "
              "(batch orders differ, so only the scale is comparable)")
    sys.exit(1 if failures else 0)


def node_share(node):
    return node["settings"]["model"]["share"] if "model" in node["settings"] else None


def seed_of(nodes, key):
    return nodes[key]["settings"].get("seed", 0)


def compare(rows, theirs):
    bad = []
    for stage, task, gallery, direction, k, value in rows:
        want = theirs.get((stage, task, gallery, direction, k))
        if want is None or abs(want - value) > 1e-9:
            bad.append(f"stage {stage} {task} {gallery} {direction} R@{k}: lethe {want}, peer {value}")
    return len(rows), bad


if __name__ == "__main__":
    main()
