"""PyTorch peer of benches/train_step.rs: the same training step of the two-branch
MLP (image 2048->1024->512, text 768->1024->512, ReLU, L2-normalised outputs),
batch 128, AdamW (lr 2e-4, wd 1e-4), gradient clipping at norm 2, on the CPU with
the given number of threads. Variants: triplet with hardest negatives (VSE++),
InfoNCE (tau 0.07), triplet + EWC (lambda 100 against a fixed Fisher), and
InfoNCE + Mod-X (alpha 1, tau 1, rows the old model ranks correctly).

On the CPU each variant also runs under torch.compile (inductor): the forward pass
with the loss compiled as one function, the clipped AdamW update as another; the
compilation happens in the 8 warm-up steps and is reported apart.

Usage: train_peer.py THREADS STEPS [DEVICE]. DEVICE is cpu (the default) or cuda.
Prints 'peer train_step_<variant> <steps/s>', 'peer train_step_<variant>_compiled
<steps/s>', 'compile train_step_<variant> <seconds>' and 'peer matmul_numpy
<GFLOP/s>' (numpy's BLAS at the step's largest product, a candidate floor).
"""
import sys
import time

import torch
import torch.nn.functional as F

threads, steps = int(sys.argv[1]), int(sys.argv[2])
DEVICE = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
torch.set_num_threads(threads)
torch.manual_seed(1)

N, B = 1024, 128
images = (torch.rand(N, 2048) - 0.5).to(DEVICE)
captions = (torch.rand(N, 768) - 0.5).to(DEVICE)


def branch(d_in):
    return torch.nn.Sequential(torch.nn.Linear(d_in, 1024), torch.nn.ReLU(),
                               torch.nn.Linear(1024, 512)).to(DEVICE)


def triplet_hardest(s, margin=0.2):
    d = s.diag().view(-1, 1)
    eye = torch.eye(s.size(0), dtype=torch.bool, device=DEVICE)
    cost_c = (margin + s - d).clamp(min=0).masked_fill(eye, 0)
    cost_i = (margin + s - d.t()).clamp(min=0).masked_fill(eye, 0)
    return (cost_c.max(1)[0].sum() + cost_i.max(0)[0].sum()) / s.size(0)


def infonce(s, tau=0.07):
    target = torch.arange(s.size(0), device=DEVICE)
    return 0.5 * (F.cross_entropy(s / tau, target) + F.cross_entropy(s.t() / tau, target))


def kl_rows(old, new, tau):
    lp_old = F.log_softmax(old / tau, dim=1)
    lp_new = F.log_softmax(new / tau, dim=1)
    return (lp_old.exp() * (lp_old - lp_new)).sum(1)


def modx(s, old_s, tau=1.0):
    eye = torch.eye(s.size(0), device=DEVICE)
    rows_ok = eye.gather(1, old_s.argmax(1, keepdim=True)).squeeze(1)
    cols_ok = eye.gather(1, old_s.t().argmax(1, keepdim=True)).squeeze(1)
    return 0.5 * ((kl_rows(old_s, s, tau) * rows_ok).sum() + (kl_rows(old_s.t(), s.t(), tau) * cols_ok).sum())


def run(variant, compiled=False):
    """Steps per second of one variant; with `compiled`, torch.compile (inductor)
    compiles the forward pass with the loss and, separately, the clipped AdamW
    step. Returns (steps/s, seconds spent compiling: the warm-up steps)."""
    image_net, text_net = branch(2048), branch(768)
    params = list(image_net.parameters()) + list(text_net.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-4)
    anchors = [p.detach().clone() for p in params]
    fisher = [torch.rand_like(p) for p in params]
    old_image, old_text = branch(2048), branch(768)
    order = torch.randperm(N, device=DEVICE)

    def forward_loss(x_i, x_t):
        e_i = F.normalize(image_net(x_i), dim=1)
        e_t = F.normalize(text_net(x_t), dim=1)
        s = e_i @ e_t.t()
        loss = infonce(s) if variant.startswith("infonce") else triplet_hardest(s)
        if variant.endswith("ewc"):
            loss = loss + 50.0 * sum((f * (p - a) ** 2).sum() for p, a, f in zip(params, anchors, fisher))
        if variant.endswith("modx"):
            with torch.no_grad():
                old_s = F.normalize(old_image(x_i), dim=1) @ F.normalize(old_text(x_t), dim=1).t()
            loss = loss + modx(s, old_s)
        return loss

    def update():
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()

    if compiled:
        forward_loss = torch.compile(forward_loss)
        update = torch.compile(update)

    def step(k):
        rows = order[(k * B) % N:(k * B) % N + B]
        loss = forward_loss(images[rows], captions[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        update()
        return loss.item()

    started = time.perf_counter()
    for k in range(8):  # warm-up (and compilation), as the lethe side skips its first epoch
        step(k)
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    for k in range(steps):
        step(k)
    return steps / (time.perf_counter() - started), warm_up


# The machine's f32 matrix-product rate through numpy's BLAS at the step's
# largest shape: a candidate for the floor of benches/train_step.rs.
import numpy as np  # noqa: E402

a = np.random.rand(128, 2048).astype(np.float32)
w = np.random.rand(2048, 1024).astype(np.float32)
a @ w
reps = 200
t = time.perf_counter()
for _ in range(reps):
    a @ w
print(f"peer matmul_numpy {reps * 2 * 128 * 2048 * 1024 / (time.perf_counter() - t) / 1e9:.1f}", flush=True)

modes = [False] if DEVICE.type == "cuda" else [False, True]
for variant in ("triplet", "infonce", "triplet_ewc", "infonce_modx"):
    for compiled in modes:
        rate, warm_up = run(variant, compiled)
        suffix = "_compiled" if compiled else ""
        print(f"peer train_step_{variant}{suffix} {rate:.2f}", flush=True)
        if compiled:
            print(f"compile train_step_{variant} {warm_up:.1f} s (torch.compile, inductor; the 8 warm-up steps)", flush=True)
