"""Peers of benches/search_bench.rs: exact top-10 inner-product search with numpy
(blocked matmul + argpartition) and FAISS IndexFlatIP, same data, same threads.
Prints 'peer <name> <queries/s>' lines and checks top-1 agreement with lethe."""
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


numpy_search(queries[:256], gallery)
t = time.perf_counter()
ids = numpy_search(queries, gallery)
dt = time.perf_counter() - t
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
t = time.perf_counter()
_, ids = index.search(queries, K)
dt = time.perf_counter() - t
print(f"search faiss IndexFlatIP: {len(queries) / dt:.0f} queries/s ({dt:.2f} s); top-1 agreement with lethe {np.mean(ids[:, 0] == lethe_top1):.4f}")
print(f"peer faiss {len(queries) / dt:.1f}")
