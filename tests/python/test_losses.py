"""Every loss and penalty lethe trains with, recomputed by an independent numpy
implementation of the reference formulas on small fixed inputs, to 1e-5:

- triplet: VSE++ (`ContrastiveLoss`, `max_violation` for hardest), sum over the batch
  as its code returns `cost_s.sum() + cost_im.sum()`, or the mean;
- InfoNCE: CLIP's symmetric cross-entropy (a mean over the batch);
- Mod-X: the official `cognition_align` correction (a row is kept when the old
  model's argmax is the row's own pair), KL summed over rows, both directions, halved;
- distill: the same KL terms without correction, a mean over rows;
- EWC: λ/2 Σ F (θ − θ*)² (Kirkpatrick et al.); MAS: λ Σ Ω (θ − θ*)² (Aljundi et al.),
  over the parameters `on` covers (shared layers always, the other branch never).

Run by scripts/test-python after `cargo build --release --example loss_values`.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = Path(os.environ.get("LETHE_LOSSES", REPO / "target" / "release" / "examples" / "loss_values"))


def positives_of(images):
    return (images[:, None] == images[None, :]).astype(float)


def triplet(S, P, m, hardest, reduction):
    d = np.diag(S)
    neg = 1 - P
    cost_c = np.maximum(0, m + S - d[:, None]) * neg      # image b against captions j
    cost_i = np.maximum(0, m + S - d[None, :]) * neg      # caption b against images j
    if hardest:
        total = cost_c.max(axis=1).sum() + cost_i.max(axis=0).sum()
    else:
        total = cost_c.sum() + cost_i.sum()
    return total if reduction == "sum" else total / len(S)


def log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def infonce(S, P, scale):
    b = len(S)
    logits = S * scale
    # Other captions of the same image leave the denominator.
    masked = np.where((P > 0) & ~np.eye(b, dtype=bool), -np.inf, logits)
    rows = np.diag(log_softmax(masked, 1))
    cols = np.diag(log_softmax(masked.T, 1))
    return -0.5 * (rows.mean() + cols.mean())


def kl_rows(old, new, t):
    lp_old, lp_new = log_softmax(old / t, 1), log_softmax(new / t, 1)
    return (np.exp(lp_old) * (lp_old - lp_new)).sum(axis=1)


def modx(new, old, t, correct):
    rows, cols = kl_rows(old, new, t), kl_rows(old.T, new.T, t)
    if correct:
        own = np.arange(len(old))
        rows = rows * (old.argmax(axis=1) == own)
        cols = cols * (old.T.argmax(axis=1) == own)
    return 0.5 * (rows.sum() + cols.sum())


def distill(new, old, t):
    return 0.5 * (kl_rows(old, new, t).mean() + kl_rows(old.T, new.T, t).mean())


def penalty(params, coefficient, covered):
    return coefficient * sum(
        (np.array(p["omega"]) * (np.array(p["theta"]) - np.array(p["anchor"])) ** 2).sum()
        for p in params if p["group"] in covered)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_numpy_references(seed):
    rng = np.random.default_rng(seed)
    b = 6
    images = np.array([0, 1, 1, 2, 3, 4])      # pairs 1 and 2: two captions of one image
    S = rng.uniform(-0.5, 1.0, (b, b))
    S[2] = S[1]                                 # one image twice: identical rows
    old = rng.uniform(-0.5, 1.0, (b, b)) + 0.8 * np.eye(b)
    old[1, 2] = old[1, 1] + 0.3                 # old model ranks another caption of image 1 first
    case = {"s": S.tolist(), "old": old.tolist(), "positives": positives_of(images).tolist(),
            "margin": 0.2, "scale": 1 / 0.07, "temperature": 0.5, "lambda": 3.0}
    out = json.loads(subprocess.run([str(EXAMPLE)], input=json.dumps(case), capture_output=True,
                                    text=True, check=True).stdout)
    P = positives_of(images)
    expected = {
        "triplet_hardest_sum": triplet(S, P, 0.2, True, "sum"),
        "triplet_hardest_mean": triplet(S, P, 0.2, True, "mean"),
        "triplet_all_sum": triplet(S, P, 0.2, False, "sum"),
        "triplet_all_mean": triplet(S, P, 0.2, False, "mean"),
        "infonce": infonce(S, P, 1 / 0.07),
        "modx_corrected": modx(S, old, 0.5, True),
        "modx_uncorrected": modx(S, old, 0.5, False),
        "distill": distill(S, old, 0.5),
        "ewc_penalty": penalty(out["params"], 3.0 / 2, {"image", "text", "shared"}),
        "mas_penalty": penalty(out["params"], 3.0, {"image", "text", "shared"}),
        "mas_image_penalty": penalty(out["params"], 3.0, {"image", "shared"}),
    }
    for name, value in expected.items():
        assert out[name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
    # The corrected Mod-X leaves out the row whose argmax is another caption of its image.
    assert out["modx_corrected"] < out["modx_uncorrected"]
