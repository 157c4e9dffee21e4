"""Peers of benches/search_bench.rs: exact top-10 inner-product search with numpy
(blocked matmul + argpartition) and FAISS IndexFlatIP, same data, same threads.
Prints 'peer <name> <queries/s>' lines and checks top-1 agreement with lethe.
Arguments: QUERIES.npy GALLERY.npy LETHE_TOP1 THREADS [cpu|cuda]; with cuda the peer
is PyTorch (blocked matmul and topk) on the GPU."""
import os
import sys
import time

threads = sys.argv[4]
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = threads

import numpy as np  # noqa: E402

queries = np.load(sys.argv[1])
gallery = np.load(sys.argv[2])
lethe_top1 = np.array([int(x) for x in open(sys.argv[3]).read().split()])
K = 10


def numpy_search(q, g, block=1024):
    out = np.empty((len(q), K), dtype=np.int64)
    for s in range(0, len(q), block):
        sims = q[s:s + block] @ g.T
        part = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s:s + block] = np.take_along_axis(part, order, axis=1)
    return out


if len(sys.argv) > 5 and sys.argv[5] == "cuda":
    # On a GPU the peer is PyTorch: blocked matmul and topk on the device.
    import torch
    q, g = torch.from_numpy(queries).cuda(), torch.from_numpy(gallery).cuda()

    def torch_search(q, block=2048):
        out = []
        for s in range(0, len(q), block):
            out.append(torch.topk(q[s:s + block] @ g.T, K, dim=1).indices)
        return torch.cat(out)

    torch_search(q[:256])
    torch.cuda.synchronize()
    t = time.perf_counter()
    ids = torch_search(q).cpu().numpy()
    dt = time.perf_counter() - t
    print(f"search torch cuda: {len(queries) / dt:.0f} queries/s ({dt:.3f} s); top-1 agreement with lethe {np.mean(ids[:, 0] == lethe_top1):.4f}")
    print(f"peer torch_cuda {len(queries) / dt:.1f}")
    sys.exit(0)

# As benches/search_bench.rs does: one run of a large search; of a short one, the
# best of at least three runs and as many as fit in a second (a single
# millisecond-long run is mostly noise).
LARGE = len(queries) * len(gallery) >= 1_000_000_000


def best_time(search):
    best, runs, started = float("inf"), 0, time.perf_counter()
    while runs < (1 if LARGE else 3) or (not LARGE and time.perf_counter() - started < 1.0 and runs < 1000):
        t = time.perf_counter()
        ids = search()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return ids, best


numpy_search(queries[:256], gallery)
ids, dt = best_time(lambda: numpy_search(queries, gallery))
print(f"search numpy: {len(queries) / dt:.0f} queries/s ({dt:.2f} s); top-1 agreement with lethe {np.mean(ids[:, 0] == lethe_top1):.4f}")
print(f"peer numpy {len(queries) / dt:.1f}")

try:
    import faiss
except ImportError:
    print("faiss-cpu is not installed: no FAISS figure", file=sys.stderr)
    sys.exit(0)
faiss.omp_set_num_threads(int(threads))
index = faiss.IndexFlatIP(gallery.shape[1])
index.add(gallery)
index.search(queries[:256], K)
ids, dt = best_time(lambda: index.search(queries, K)[1])
print(f"search faiss IndexFlatIP: {len(queries) / dt:.0f} queries/s ({dt:.2f} s); top-1 agreement with lethe {np.mean(ids[:, 0] == lethe_top1):.4f}")
print(f"peer faiss {len(queries) / dt:.1f}")
