"""PyTorch peer of benches/featurize_bench.rs: all-MiniLM-L6-v2 with Hugging Face
`transformers` (BertModel) and the fast tokenizer, from the same weight folder,
attention-masked mean pooling and L2 normalisation, batches of 64, on the CPU. As
sentence-transformers' `encode` does, captions are sorted by length (longest first)
before batching and the rows put back in order (lethe packs sentences without padding).

Usage: featurize_peer.py ENCODER_DIR CAPTIONS_TXT LETHE_NPY THREADS
Prints 'peer featurize_minilm <captions/s>' and the agreement with lethe's rows.
"""
import sys
import time

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel

encoder_dir, captions_path, lethe_path, threads = sys.argv[1:5]
torch.set_num_threads(int(threads))
texts = open(captions_path, encoding="utf-8").read().split("\n")
tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
model = BertModel.from_pretrained(encoder_dir).eval()


def encode(batch):
    tokens = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


encode(texts[:64])
started = time.perf_counter()
order = np.argsort([-len(t) for t in texts], kind="stable")
ordered = [texts[i] for i in order]
rows = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
rows[order] = np.concatenate([encode(ordered[i:i + 64]) for i in range(0, len(ordered), 64)])
seconds = time.perf_counter() - started
ours = np.load(lethe_path)
cosine = np.sum(rows * ours, axis=1)
print(f"featurize PyTorch/transformers: {len(texts) / seconds:.0f} captions/s ({seconds:.2f} s); "
      f"cosine with lethe's rows: min {cosine.min():.6f}, mean {cosine.mean():.6f}")
print(f"peer featurize_minilm {len(texts) / seconds:.2f}")
