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
- EWC: the peer's `fisher`, fed lethe's batch order (lethe's random stream,
  `src/rng.rs`, replayed here), on each model an importance(ewc) node read.
- training: every `train` node is replayed by the peer's `train_stage` from the same
  inputs (lethe's previous model, or the `init` draws, lethe's importance) with
  lethe's batch order; the weights must come out as lethe's up to float rounding.
  This pins the loss, the positives mask, the penalties and their coverage, AdamW,
  clipping and the batching; only the random streams remain to differ in a normal
  peer run. (Most replays land within 1e-4 of lethe; a few, mostly the 80-step joint
  stages, drift by a few tenths once float rounding flips a hardest-negative choice.)

Usage: table1_check.py RUN_DIR CACHE_DIR [N] (a `lethe run pipelines/table1.pipe --cache
CACHE_DIR` run; N: replay only the first N train nodes). Exits 1 when a comparison fails.
"""
import glob
import json
import math
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
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None  # train nodes to replay (all by default)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
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
    worst_mas, worst_ewc = 0.0, 0.0
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
            e = s["estimate"]
            batches = lethe_batches([captions], e["batch"], "within_task", e["seed"] ^ 0x0F154E12, 0, 0)
            mine = peer.fisher(m, data, captions, e["seed"], s["stage"], batches=batches)
            for n, t in theirs.items():
                err = float((mine[n] - t).abs().max() / t.abs().max().clamp(min=1e-30))
                worst_ewc = max(worst_ewc, err)
    for name, worst in (("MAS: the peer's omega", worst_mas), ("EWC: the peer's Fisher (lethe's batches)", worst_ewc)):
        ok = worst < 1e-3
        failures += 0 if ok else 1
        print(f"{name} equals lethe's within {worst:.1e} (max abs error / max value, every tensor of "
              f"every importance node){'' if ok else '  MISMATCH'}")

    # Training: every train node replayed from its own inputs with lethe's batch order.
    inits = {(node_share(n), n["settings"]["seed"]): k for k, n in nodes.items() if n["settings"]["kind"] == "init"}
    drifts = []
    train_keys = sorted(k for k, n in nodes.items() if n["settings"]["kind"] == "train")
    for key in train_keys[:limit]:
        node, s = nodes[key], nodes[key]["settings"]
        share = node_share(node)
        start = (node["inputs"][s["previous"]]["key"] if s["previous"] is not None
                 else inits[(share, s["seed"])])
        m = model(start, share)
        penalty = None
        if s["regularizer"]:
            (reg,) = s["regularizer"]
            (imp_slot,) = s["importance"]
            importance = load_file(os.path.join(cache, node["inputs"][imp_slot]["key"], "importance.safetensors"))
            coefficient = reg["lambda"] / 2.0 if reg["kind"] == "ewc" else reg["lambda"]
            anchors = {n: p.detach().clone() for n, p in m.named_parameters()}
            penalty = (coefficient, {n: importance[n] for n in m.covered(reg["on"])}, anchors)
        tasks = [data["tasks"][t]["train_captions"] for t in s["tasks"]]
        order = lambda epoch: lethe_batches(tasks, s["batch"], s["negatives"], s["seed"], s["stage"], epoch)
        trained = peer.train_stage(m, data, tasks, s["negatives"], s["seed"], s["stage"], s["epochs"],
                                   penalty, order=order)
        theirs = load_file(os.path.join(cache, key, "model.safetensors"))
        before = load_file(os.path.join(cache, start, "model.safetensors"))
        # How far apart the two trained models are, relative to how far the stage moved
        # the weights (Adam turns float noise in near-zero gradients into lr-sized steps,
        # so a max-abs comparison would only measure that).
        apart = math.sqrt(sum(float(((p.detach() - theirs[n]) ** 2).sum()) for n, p in trained.named_parameters()))
        moved = math.sqrt(sum(float(((theirs[n] - before[n]) ** 2).sum()) for n in theirs))
        err = apart / moved
        drifts.append((err, node["label"], s["seed"], share, [r["kind"] for r in s["regularizer"]]))
    if drifts:
        drifts.sort()
        errs = np.array([d[0] for d in drifts])
        # Two independent trainings land about 1.4 apart on this scale. A replay is
        # exact up to float rounding until the rounding flips one hardest-negative
        # choice, after which the trajectories drift apart partially: train(1: animals),
        # seed 2, share 1 replays to 5e-2 of lethe in f32 and to 2e-5 in f64, and the
        # 80-step joint stages drift the most. So: a median at rounding level, and no
        # replay anywhere near an independent training.
        ok = np.median(errs) < 1e-3 and errs.max() < 0.5
        failures += 0 if ok else 1
        print(f"training: {len(drifts)} train nodes replayed by the peer with lethe's batches; "
              f"|peer weights - lethe's| / |lethe's weights - the stage's start|: median {np.median(errs):.1e}, max {errs.max():.1e} "
              f"({drifts[-1][1]}, seed {drifts[-1][2]}, share {drifts[-1][3]}, {drifts[-1][4] or 'ft'})"
              f"{'' if ok else '  MISMATCH'}")
        for d in drifts[::-1][:int(os.environ.get("SHOW", "5"))]:
            print(f"  {d[0]:.1e} {d[1]}, seed {d[2]}, share {d[3]}, {d[4] or 'ft'}")
    sys.exit(1 if failures else 0)


class LetheRng:
    """src/rng.rs: xoshiro256** seeded by blake3 over a seed and a path of labels."""

    MASK = (1 << 64) - 1

    def __init__(self, seed, labels):
        import blake3
        h = blake3.blake3(b"lethe-rng-v1")
        h.update(seed.to_bytes(8, "little"))
        for label in labels:
            h.update(len(label.encode()).to_bytes(8, "little"))
            h.update(label.encode())
        b = h.digest()
        self.s = [int.from_bytes(b[i * 8:i * 8 + 8], "little") for i in range(4)]
        if self.s == [0, 0, 0, 0]:
            self.s[0] = 1

    def next_u64(self):
        s, M = self.s, self.MASK
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M
        result = (rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 17) & M
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def below(self, n):
        zone = self.MASK - (self.MASK % n)
        while True:
            x = self.next_u64()
            if x < zone:
                return x % n

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def lethe_batches(tasks, batch, negatives, seed, stage, epoch):
    """src/train/batches.rs `epoch_batches`, with lethe's streams."""
    stream = lambda *labels: LetheRng(seed, ["batches", "stage", str(stage), "epoch", str(epoch), *labels])
    chunk = lambda items: [torch.tensor(items[i:i + batch]) for i in range(0, len(items), batch)
                           if len(items[i:i + batch]) >= 2]
    if negatives == "cross_task":
        everything = [c for t in tasks for c in t.tolist()]
        stream("cross").shuffle(everything)
        return chunk(everything)
    batches = []
    for i, t in enumerate(tasks):
        items = t.tolist()
        stream("task", str(i)).shuffle(items)
        batches += chunk(items)
    if len(tasks) > 1:
        stream("interleave").shuffle(batches)
    return batches


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
