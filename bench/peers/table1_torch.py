"""The seed paper's Table 1 protocol (pipelines/table1.pipe) as a researcher would
write it with PyTorch and FAISS: one script, a plain loop over the variants and the
seeds, every variant trained and evaluated from scratch (no work shared between
variants, no cache), so that `bench/table1-peer` can time it against
`lethe run pipelines/table1.pipe` from an empty cache and compare the headline
recalls (they must agree within the seed std; bitwise equality is not expected:
the random streams differ).

The protocol, with where each setting comes from (`docs/methods.md` has the formulas,
`src/lang/schema.rs` the defaults the pipe does not override):

- data: the emoji manifest's Arrow feature tables (f16 `feature` columns, read as
  f32, not normalised: lethe feeds the features as stored), split `sevige`, tasks
  animals, vehicles, clothes, in that order. The split is recomputed here from the
  manifest as `src/data/split.rs` and `src/data/select.rs` do: an image belongs to a
  task when its column values are among the task's listed ones; its part is the
  `split` column or, without one, blake3 of its id read as a number in [0, 1)
  (below `test_fraction`: test; below `test_fraction + val_fraction`: val; else
  train). Rows keep table order (galleries and queries in table order).
- model: per modality an MLP `in -> 1024 -> 512`, ReLU between layers, no dropout,
  outputs L2-normalised; `share = 1` makes the top layer (1024 -> 512) one
  `nn.Linear` used by both branches. Init: PyTorch's `nn.Linear` default, which is
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, the distribution lethe
  draws from (`src/model/mod.rs`).
- training: VSE++ triplet loss with the hardest negative, margin 0.2, SUMMED over
  the batch (`cost_s.sum() + cost_im.sum()`); other captions of the same image in
  the batch are masked as positives. AdamW(lr 2e-4, wd 1e-4, betas (0.9, 0.999),
  eps 1e-8), constant lr, a fresh optimizer at every stage (lethe builds one per
  `train` node), 20 epochs, batch 128, gradient clipping at global norm 2 (the
  penalty's gradient included, as lethe adds it before clipping). An epoch visits
  every training caption of the stage's task(s) once in a random order, cut into
  batches of 128; a last batch of one pair is dropped (`src/train/batches.rs`).
  Joint `cross_task`: the captions of all tasks shuffled together; joint
  `within_task`: each task's captions shuffled and cut, then the batches of all
  tasks interleaved in a random order.
- EWC (lambda 1e5): after task k the empirical Fisher, the mean over the batches
  of one shuffled epoch of the task's training pairs of the squared gradient of the
  summed triplet loss, at the trained weights; summed over tasks
  (`accumulate = sum`); penalty `lambda / 2 * sum F (theta - theta*)^2`, theta* the
  weights after the previous task (`src/train/importance.rs`, `terms.rs`).
- MAS (lambda 1e3): Omega = mean over samples of |d ||g(x)||^2 / d theta|, g the
  branch output BEFORE the L2 normalisation, per-sample gradients (here with
  `torch.func.vmap`); image samples are the task's distinct training images, text
  samples its training captions; a shared layer averages over both; summed over
  tasks; penalty `lambda * sum Omega (theta - theta*)^2`.
- `on = query` with `decouple = true`: two model chains per variant, one per
  direction, both from the same untrained model; each is trained with the same
  bidirectional loss, but its penalty covers only the branch that embeds its
  direction's queries (im2txt: the image layers and the shared ones; txt2im: the
  text layers and the shared ones); each chain is evaluated only in its own
  direction. Otherwise (`on = both`) the penalty covers every parameter.
- galleries: `reindex`: after stage k every task's gallery is embedded by model k;
  `frozen`: task j's gallery is embedded once, by the model that has just learned
  it, and kept; a task not learned yet is embedded by the current model (forward
  transfer rows). Queries always by the current model. im2txt: image queries,
  caption gallery; txt2im: caption queries, image gallery.
- evaluation after every stage (stage 0: the untrained model; a joint model once,
  as stage T): FAISS `IndexFlatIP` on the L2-normalised embeddings, Recall@1/5/10;
  im2txt hits when any caption of the image is in the top K, txt2im every caption a
  query with one correct image. Per-task gallery (the task's own), and union (every
  task learned so far, plus the evaluated task when not learned yet); `all` pools
  the union ranks of the learned tasks' queries. Figures from R[k][j]
  (`src/eval/metrics.rs`): average = mean_j R[T][j]; total = R[T][all];
  forgetting, BWT, FWT as documented. Mean and sample std (ddof 1) over seeds.

Usage: table1_torch.py [--dataset PATH] [--out FILE.json] [--threads N]
                       [--check-pipeline PIPELINE.json] [--seeds S ...] [--quick]
Prints every variant's headline (avg R@10 with the task known, union total R@10,
both directions, mean ± std over seeds) in the layout of lethe's headline.txt, the
wall time, and writes every summary figure to --out.
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import blake3
import faiss
import numpy as np
import pyarrow.ipc as ipc
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.func import grad, vmap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---------------------------------------------------------------------------
# The protocol: pipelines/table1.pipe, with src/lang/schema.rs's defaults for every
# setting the pipe leaves out. `--check-pipeline` compares it with the settings lethe
# resolved (a run's pipeline.json), so the two cannot silently drift apart.
# ---------------------------------------------------------------------------
DATASET = "datasets/emoji/emoji.yaml"
SPLIT = "sevige"
TASKS = ["animals", "vehicles", "clothes"]
SEEDS = [1, 2, 3]
HIDDEN, EMBED = [1024], 512               # model.image = model.text = mlp(hidden = [1024], embed = 512)
MARGIN = 0.2                              # triplet(margin = 0.2, negatives = hardest), reduction = sum
EPOCHS = 20
BATCH = 128                               # default
LR, WEIGHT_DECAY, BETAS, EPS = 2e-4, 1e-4, (0.9, 0.999), 1e-8   # default adamw
GRAD_CLIP = 2.0                           # default
RECALL_K = [1, 5, 10]
DIRECTIONS = ["im2txt", "txt2im"]
GALLERIES = ["per_task", "union"]
EWC = ("ewc", 100000.0)
MAS = ("mas", 1000.0)

# The sweep: (label, schedule, negatives, index, regularizer, on, decouple), then
# model.share = [0 as "no sharing", 1 as "sharing"]; the first axis varies slowest.
COLUMNS = [
    ("joint CTNP", "joint", "cross_task", "frozen", None, "both", False),
    ("joint", "joint", "within_task", "frozen", None, "both", False),
    ("reindex ft", "sequential", "within_task", "reindex", None, "both", False),
    ("reindex EWC", "sequential", "within_task", "reindex", EWC, "both", False),
    ("reindex MAS", "sequential", "within_task", "reindex", MAS, "both", False),
    ("frozen ft", "sequential", "within_task", "frozen", None, "both", False),
    ("frozen EWC", "sequential", "within_task", "frozen", EWC, "both", False),
    ("frozen EWC-q", "sequential", "within_task", "frozen", EWC, "query", True),
    ("frozen MAS", "sequential", "within_task", "frozen", MAS, "both", False),
    ("frozen MAS-q", "sequential", "within_task", "frozen", MAS, "query", True),
]
SHARES = [(0, "no sharing"), (1, "sharing")]


def variants():
    for label, schedule, negatives, index, reg, on, decouple in COLUMNS:
        for share, share_label in SHARES:
            yield {
                "label": f"{label}, {share_label}",
                "schedule": schedule,
                "negatives": negatives,
                "index": index,
                "regularizer": reg,
                "on": on,
                "decouple": decouple,
                "share": share,
            }


def check_pipeline(path):
    """Fails when lethe's resolved settings (a run's pipeline.json) differ from ours."""
    resolved = json.load(open(path))
    ours = {(v["label"], s): v for v in variants() for s in SEEDS}
    problems = []
    if len(resolved) != len(ours):
        problems.append(f"{len(resolved)} variants in {path}, {len(ours)} here")
    for r in resolved:
        v = ours.get((r["label"], r["seed"]))
        if v is None:
            problems.append(f"no variant `{r['label']}` seed {r['seed']} here")
            continue
        t, m = r["train"], r["model"]
        reg = [(x["kind"], x["lambda"], x.get("on", "both")) for x in t["regularizer"]]
        want = [(v["regularizer"][0], v["regularizer"][1], v["on"])] if v["regularizer"] else []
        checks = {
            "split": (r["split"], SPLIT), "tasks": (r["tasks"], TASKS),
            "schedule": (r["schedule"], v["schedule"]), "index": (r["index"], v["index"]),
            "share": (m["share"], v["share"]),
            "image": ((m["image"]["hidden"], m["image"]["embed"], m["image"]["activation"], m["image"]["dropout"]),
                      (HIDDEN, EMBED, "relu", 0.0)),
            "text": ((m["text"]["hidden"], m["text"]["embed"], m["text"]["activation"], m["text"]["dropout"]),
                     (HIDDEN, EMBED, "relu", 0.0)),
            "loss": ((t["loss"]["kind"], t["loss"]["margin"], t["loss"]["negatives"], t["loss"]["reduction"]),
                     ("triplet", MARGIN, "hardest", "sum")),
            "optimizer": ((t["optimizer"]["kind"], t["optimizer"]["lr"], t["optimizer"]["weight_decay"],
                           t["optimizer"]["beta1"], t["optimizer"]["beta2"], t["optimizer"]["eps"]),
                          ("adamw", LR, WEIGHT_DECAY, BETAS[0], BETAS[1], EPS)),
            "schedule_lr": (t["schedule_lr"]["kind"], "constant"),
            "epochs": (t["epochs"], EPOCHS), "batch": (t["batch"], BATCH),
            "negatives": (t["negatives"], v["negatives"]), "grad_clip": (t["grad_clip"], GRAD_CLIP),
            "decouple": (t["decouple"], v["decouple"]), "regularizer": (reg, want),
            "recall": (r["evaluate"]["recall"], RECALL_K),
            "directions": (r["evaluate"]["directions"], DIRECTIONS),
            "gallery": (r["evaluate"]["gallery"], GALLERIES),
        }
        for key, (theirs, mine) in checks.items():
            if json.loads(json.dumps(theirs)) != json.loads(json.dumps(mine)):
                problems.append(f"`{r['label']}` seed {r['seed']}: {key} is {theirs} in lethe, {mine} here")
        if any(x.get("accumulate", "sum") != "sum" for x in t["regularizer"]):
            problems.append(f"`{r['label']}`: EWC accumulate is not `sum`")
    if problems:
        sys.exit("the peer's protocol differs from lethe's pipeline.json:\n  " + "\n  ".join(problems[:20]))
    print(f"protocol checked against {path}: {len(resolved)} variants agree", flush=True)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def read_table(path):
    table = ipc.open_file(path).read_all()
    column = table.column("feature").combine_chunks()
    dim = column.type.list_size
    features = column.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), dim)
    return table, features


def load_split(manifest_path, split):
    """Features and per-task rows of one split, as src/data/split.rs computes them."""
    manifest = yaml.safe_load(open(manifest_path))
    base = os.path.dirname(manifest_path)
    images, image_features = read_table(os.path.join(base, manifest["images"]))
    captions, caption_features = read_table(os.path.join(base, manifest["captions"]))
    image_ids = images.column("id").to_pylist()
    row_of = {id_: r for r, id_ in enumerate(image_ids)}
    caption_image = np.array([row_of[i] for i in captions.column("image_id").to_pylist()], dtype=np.int64)

    # Part of every image: the `split` column, else blake3 of the id in [0, 1).
    test_fraction = float(manifest.get("test_fraction", 0.0))
    val_fraction = float(manifest.get("val_fraction", 0.0))
    if "split" in images.column_names:
        parts = images.column("split").to_pylist()
    else:
        parts = []
        for id_ in image_ids:
            h = int.from_bytes(blake3.blake3(id_.encode()).digest()[:8], "little") / float(2**64 - 1)
            parts.append("test" if h < test_fraction else "val" if h < test_fraction + val_fraction else "train")

    rules = dict(manifest["splits"][split])
    evaluated = rules.pop("evaluate", "test")
    for unsupported in ("random", "test_images", "match", "overlap", "captions"):
        if unsupported in rules:
            sys.exit(f"split `{split}`: the peer implements plain column rules only, not `{unsupported}`")
    columns = {c: images.column(c).to_pylist() for c in images.column_names if c != "feature"}
    task_of = [None] * len(image_ids)
    for t, (name, rule) in enumerate(rules.items()):
        for r in range(len(image_ids)):
            if all(columns[c][r] in values for c, values in rule.items()):
                if task_of[r] is not None:
                    sys.exit(f"image {image_ids[r]} is in two tasks of split `{split}`")
                task_of[r] = name
    tasks = {}
    for name in rules:
        test_images = [r for r in range(len(image_ids)) if task_of[r] == name and parts[r] == evaluated]
        train_captions = [c for c, i in enumerate(caption_image) if task_of[i] == name and parts[i] == "train"]
        test_captions = [c for c, i in enumerate(caption_image) if task_of[i] == name and parts[i] == evaluated]
        tasks[name] = {
            "train_captions": torch.tensor(train_captions, dtype=torch.long),
            "test_images": torch.tensor(test_images, dtype=torch.long),
            "test_captions": torch.tensor(test_captions, dtype=torch.long),
        }
    return {
        "image_features": torch.from_numpy(image_features),
        "caption_features": torch.from_numpy(caption_features),
        "caption_image": torch.from_numpy(caption_image),
        "tasks": tasks,
    }


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
class TwoBranch(nn.Module):
    """An MLP per modality; the top `share` layers are one set of weights."""

    def __init__(self, image_dim, text_dim, share):
        super().__init__()
        wi, wt = [image_dim, *HIDDEN, EMBED], [text_dim, *HIDDEN, EMBED]
        depth = len(wi) - 1
        self.image = nn.ModuleList(nn.Linear(wi[l], wi[l + 1]) for l in range(depth - share))
        self.text = nn.ModuleList(nn.Linear(wt[l], wt[l + 1]) for l in range(depth - share))
        self.shared = nn.ModuleList(nn.Linear(wi[l], wi[l + 1]) for l in range(depth - share, depth))

    def path(self, modality):
        return list(self.image if modality == "image" else self.text) + list(self.shared)

    def raw(self, modality, x):
        layers = self.path(modality)
        for l, layer in enumerate(layers):
            x = layer(x)
            if l + 1 < len(layers):
                x = F.relu(x)
        return x

    def forward(self, modality, x):
        return F.normalize(self.raw(modality, x), dim=1, eps=1e-12)

    def covered(self, on):
        """Names of the parameters a penalty `on` covers (shared layers always)."""
        prefixes = {"both": ("image.", "text.", "shared."), "image": ("image.", "shared."),
                    "text": ("text.", "shared.")}[on]
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]


def triplet_hardest(s, positives):
    """VSE++ max-violation loss, summed over the batch (cost_s.sum() + cost_im.sum())."""
    d = s.diag()
    cost_caption = (MARGIN + s - d.view(-1, 1)).clamp(min=0).masked_fill(positives, 0)  # image b vs captions j
    cost_image = (MARGIN + s - d.view(1, -1)).clamp(min=0).masked_fill(positives, 0)    # caption b vs images j
    return cost_caption.max(1)[0].sum() + cost_image.max(0)[0].sum()


def batch_loss(model, data, captions):
    images = data["caption_image"][captions]
    e_i = model("image", data["image_features"][images])
    e_t = model("text", data["caption_features"][captions])
    positives = images.view(-1, 1) == images.view(1, -1)
    return triplet_hardest(e_i @ e_t.t(), positives)


def chunk(order):
    return [b for b in torch.split(order, BATCH) if len(b) >= 2]


def epoch_batches(task_captions, negatives, gen):
    if negatives == "cross_task":
        everything = torch.cat(task_captions)
        return chunk(everything[torch.randperm(len(everything), generator=gen)])
    batches = []
    for captions in task_captions:
        batches += chunk(captions[torch.randperm(len(captions), generator=gen)])
    if len(task_captions) > 1:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    return batches


def train_stage(model, data, task_captions, negatives, seed, stage, epochs, penalty, order=None):
    """One stage; `penalty` is (coefficient, {name: importance}, {name: anchor}) or None.
    `order(epoch)` may give the batches instead of this script's own random stream
    (table1_check.py replays lethe's)."""
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(1000 * seed + stage)
    for epoch in range(epochs):
        batches = order(epoch) if order else epoch_batches(task_captions, negatives, gen)
        for captions in batches:
            loss = batch_loss(model, data, captions)
            if penalty is not None:
                coefficient, importance, anchors = penalty
                loss = loss + coefficient * sum(
                    (importance[n] * (params[n] - anchors[n]) ** 2).sum() for n in importance)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
    return model


def fisher(model, data, captions, seed, stage, batches=None):
    """EWC's empirical Fisher: mean over one epoch's batches of squared gradients."""
    gen = torch.Generator().manual_seed(1000 * seed + stage + 500)
    batches = batches if batches is not None else epoch_batches([captions], "within_task", gen)
    sums = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for b in batches:
        model.zero_grad(set_to_none=True)
        batch_loss(model, data, b).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                sums[n] += p.grad ** 2
    model.zero_grad(set_to_none=True)
    return {n: s / max(len(batches), 1) for n, s in sums.items()}


def omega(model, data, captions):
    """MAS's Omega: mean over samples of |d ||g(x)||^2 / d theta| (per-sample gradients)."""
    images = torch.unique(data["caption_image"][captions])  # distinct images, ascending
    sums = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    counts = {n: 0 for n in sums}
    for modality, x in (("image", data["image_features"][images]),
                        ("text", data["caption_features"][captions])):
        names = [n for n, _ in model.named_parameters()
                 if n.startswith((modality + ".", "shared."))]
        params = {n: p.detach() for n, p in model.named_parameters() if n in names}

        def squared_norm(p, sample):
            return (functional_raw(model, p, modality, sample.unsqueeze(0)) ** 2).sum()

        per_sample = vmap(grad(squared_norm), in_dims=(None, 0))
        for rows in torch.split(x, 32):
            grads = per_sample(params, rows)
            for n in names:
                sums[n] += grads[n].abs().sum(0)
                counts[n] += len(rows)
    return {n: s / counts[n] if counts[n] else s for n, s in sums.items()}


def functional_raw(model, params, modality, x):
    """g(x), the branch output before normalisation, with the given parameter values."""
    prefix = "image" if modality == "image" else "text"
    names = [f"{prefix}.{l}" for l in range(len(model.image if modality == "image" else model.text))]
    names += [f"shared.{l}" for l in range(len(model.shared))]
    for l, name in enumerate(names):
        x = F.linear(x, params[f"{name}.weight"], params[f"{name}.bias"])
        if l + 1 < len(names):
            x = F.relu(x)
    return x


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
@torch.no_grad()
def embed_tasks(model, data):
    """Every task's test images and captions by `model`, as float32 numpy arrays."""
    out = {}
    for name, rows in data["tasks"].items():
        out[name] = {
            "image": model("image", data["image_features"][rows["test_images"]]).numpy(),
            "text": model("text", data["caption_features"][rows["test_captions"]]).numpy(),
        }
    return out


def side(data, task, direction):
    """(query modality, gallery modality, the image of each query, the image of each gallery item)."""
    rows = data["tasks"][task]
    caption_images = data["caption_image"][rows["test_captions"]].numpy()
    images = rows["test_images"].numpy()
    if direction == "im2txt":
        return "image", "text", images, caption_images
    return "text", "image", caption_images, images


def first_correct_ranks(queries, targets, gallery, gallery_image):
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery))
    scores, order = index.search(np.ascontiguousarray(queries), gallery.shape[0])
    # Exact ties are real here (captions with the same text, hence the same features,
    # describe different images). FAISS leaves their order unspecified; lethe
    # (docs/methods.md, as VSE++'s evaluation) gives them to the earlier gallery item.
    order = np.take_along_axis(order, np.lexsort((order, -scores), axis=-1), axis=1)
    correct = gallery_image[order] == targets[:, None]
    return np.where(correct.any(1), correct.argmax(1) + 1, gallery.shape[0] + 1)


def evaluate(data, stage, seen, queries_by, galleries_by, directions):
    """Recall rows of one stage. queries_by[task]: embeddings by the current model;
    galleries_by[task]: the embeddings the index policy searches for that task."""
    rows = []
    for direction in directions:
        pooled = []
        for j, task in enumerate(TASKS):
            q_mod, g_mod, targets, gallery_image = side(data, task, direction)
            queries = queries_by[task][q_mod]
            scopes = {"per_task": [j], "union": list(range(seen)) + ([j] if j >= seen else [])}
            for scope in GALLERIES:
                members = [TASKS[m] for m in scopes[scope]]
                gallery = np.concatenate([galleries_by[m][g_mod] for m in members])
                images = np.concatenate([side(data, m, direction)[3] for m in members])
                ranks = first_correct_ranks(queries, targets, gallery, images)
                for k in RECALL_K:
                    rows.append((stage, task, scope, direction, k, 100.0 * float((ranks <= k).mean())))
                if scope == "union" and j < seen:
                    pooled.append(ranks)
        if pooled and "union" in GALLERIES:
            ranks = np.concatenate(pooled)
            for k in RECALL_K:
                rows.append((stage, "all", "union", direction, k, 100.0 * float((ranks <= k).mean())))
    return rows


def figures(rows, sequential):
    """average, total, forgetting, BWT, FWT per (direction, gallery, k), as src/eval/metrics.rs."""
    matrix = {}
    for stage, task, gallery, direction, k, recall in rows:
        matrix.setdefault((direction, gallery, k), {}).setdefault(stage, {})[task] = recall
    out = {}
    t = len(TASKS)
    for key, by_stage in matrix.items():
        last = max(by_stage)
        final = by_stage[last]
        out[key + ("average",)] = float(np.mean([final[x] for x in TASKS]))
        if "all" in final:
            out[key + ("total",)] = final["all"]
        if not sequential or t < 2 or last != t:
            continue
        r = lambda k, j: by_stage[k][TASKS[j - 1]]
        out[key + ("forgetting",)] = float(np.mean([max(r(l, j) for l in range(j, t)) - r(t, j)
                                                    for j in range(1, t)]))
        out[key + ("bwt",)] = float(np.mean([r(t, j) - r(j, j) for j in range(1, t)]))
        out[key + ("fwt",)] = float(np.mean([r(j - 1, j) - r(0, j) for j in range(2, t + 1)]))
    return out


# ---------------------------------------------------------------------------
# One variant, one seed
# ---------------------------------------------------------------------------
def run_variant(v, seed, data, epochs):
    torch.manual_seed(seed)
    image_dim = data["image_features"].shape[1]
    text_dim = data["caption_features"].shape[1]
    init = TwoBranch(image_dim, text_dim, v["share"])
    tasks = data["tasks"]
    if v["schedule"] == "joint":
        # One model on the union of the tasks' training pairs, evaluated once as stage T.
        model = train_stage(copy.deepcopy(init), data, [tasks[t]["train_captions"] for t in TASKS],
                            v["negatives"], seed, len(TASKS), epochs, None)
        embedded = embed_tasks(model, data)
        return evaluate(data, len(TASKS), len(TASKS), embedded, embedded, DIRECTIONS)

    # Decoupled: one chain per direction, its penalty on that direction's query branch.
    chains = [(d, {"im2txt": "image", "txt2im": "text"}[d]) for d in DIRECTIONS] if v["decouple"] \
        else [(None, "both")]
    rows = []
    for direction, on in chains:
        directions = [direction] if direction else DIRECTIONS
        model = copy.deepcopy(init)
        current = embed_tasks(model, data)
        rows += evaluate(data, 0, 0, current, current, directions)
        frozen = {}
        importance = None
        for k, task in enumerate(TASKS, start=1):
            penalty = None
            if v["regularizer"] is not None and k > 1:
                kind, lam = v["regularizer"]
                coefficient = lam / 2.0 if kind == "ewc" else lam
                covered = model.covered(on)
                anchors = {n: p.detach().clone() for n, p in model.named_parameters()}
                penalty = (coefficient, {n: importance[n] for n in covered}, anchors)
            model = train_stage(model, data, [tasks[task]["train_captions"]], v["negatives"],
                                seed, k, epochs, penalty)
            if v["regularizer"] is not None and k < len(TASKS):
                kind, _ = v["regularizer"]
                estimate = (fisher(model, data, tasks[task]["train_captions"], seed, k) if kind == "ewc"
                            else omega(model, data, tasks[task]["train_captions"]))
                importance = estimate if importance is None else \
                    {n: importance[n] + estimate[n] for n in estimate}
            current = embed_tasks(model, data)
            frozen[task] = current[task]  # indexed once, by the model that learned it
            if v["index"] == "reindex":
                galleries = current
            else:
                galleries = {t: frozen.get(t, current[t]) for t in TASKS}
            rows += evaluate(data, k, k, current, galleries, directions)
    return rows


def stat(values):
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean, std


def cell(mean, std):
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=os.path.join(REPO, DATASET))
    parser.add_argument("--out", default=None, help="JSON file for every summary figure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check-pipeline", default=None,
                        help="a lethe run's pipeline.json: fail unless its settings are ours")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS,
                        help="seeds (default: the pipe's); other seeds calibrate how far two "
                             "sets of 3 seeds of the same code fall apart")
    parser.add_argument("--quick", action="store_true",
                        help="2 epochs instead of the protocol's (NOT the protocol: a smoke test)")
    args = parser.parse_args()
    seeds = args.seeds
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.check_pipeline:
        check_pipeline(args.check_pipeline)
    epochs = 2 if args.quick else EPOCHS
    if args.quick:
        print(f"--quick: {epochs} epochs instead of {EPOCHS}; this is NOT the Table 1 protocol", flush=True)

    started = time.perf_counter()
    data = load_split(args.dataset, SPLIT)
    per_seed = {}  # label -> list of figure dicts
    all_variants = list(variants())
    for i, v in enumerate(all_variants):
        for n, seed in enumerate(seeds):
            t0 = time.perf_counter()
            rows = run_variant(v, seed, data, epochs)
            per_seed.setdefault(v["label"], []).append(figures(rows, v["schedule"] == "sequential"))
            print(f"[{i * len(seeds) + n + 1:3d}/{len(all_variants) * len(seeds)}] "
                  f"{v['label']}, seed {seed}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started

    summary = []
    for label, runs in per_seed.items():
        for key in runs[0]:
            direction, gallery, k, metric = key
            values = [r[key] for r in runs]
            mean, std = stat(values)
            summary.append({"variant": label, "direction": direction, "gallery": gallery, "k": k,
                            "metric": metric, "mean": mean, "std": std, "n_seeds": len(values),
                            "values": values})

    # The headline, laid out as lethe's headline.txt.
    k = max(RECALL_K)
    columns = sorted([(d, f"{d} avg R@{k}", "per_task", "average") for d in DIRECTIONS] +
                     [(d, f"{d} union total R@{k}", "union", "total") for d in DIRECTIONS],
                     key=lambda c: c[1])
    width = max(len("variant"), *(len(label) for label in per_seed))
    lines = [f"{'variant':<{width}}" + "".join(f"  {c[1]:>20}" for c in columns)]
    find = {(s["variant"], s["direction"], s["gallery"], s["k"], s["metric"]): s for s in summary}
    for label in per_seed:
        cells = []
        for d, _, gallery, metric in columns:
            s = find.get((label, d, gallery, k, metric))
            cells.append(cell(s["mean"], s["std"]) if s else "")
        lines.append(f"{label:<{width}}" + "".join(f"  {c:>20}" for c in cells))
    print("\n".join(lines))
    print(f"peer wall time {wall:.1f} s ({len(all_variants)} variants x {len(seeds)} seeds, "
          f"{args.threads} threads{', QUICK: not the protocol' if args.quick else ''})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"wall_seconds": wall, "threads": args.threads, "epochs": epochs,
                       "quick": args.quick, "seeds": seeds, "figures": summary}, f, indent=1)


if __name__ == "__main__":
    main()
