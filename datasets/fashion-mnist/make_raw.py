"""Fashion-MNIST's test set (Debian's dataset-fashion-mnist) as lethe raw lists: each
28x28 grey image written as a PNG, `images.jsonl` with its class (`label`) and kind
(`kind`: clothing, footwear, bag), and one caption per image, its class name.

usage: make_raw.py FASHION_DIR OUT [--sample N]
"""
import argparse
import gzip
import json
import pathlib
import struct
import zlib

# The dataset's class names (its README), lower-cased as prompts read them.
CLASSES = ["t-shirt or top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot"]
KIND = {"sandal": "footwear", "sneaker": "footwear", "ankle boot": "footwear", "bag": "bag"}


def idx(path, magic):
    data = gzip.open(path).read()
    got, n = struct.unpack(">II", data[:8])
    assert got == magic, f"{path}: not an IDX file of the expected kind"
    return n, data


def png(pixels, width, height):
    """An 8-bit greyscale PNG."""
    rows = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body
                                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("fashion")
    p.add_argument("out")
    p.add_argument("--sample", type=int, default=0)
    a = p.parse_args()
    root, out = pathlib.Path(a.fashion), pathlib.Path(a.out)
    n, images = idx(root / "t10k-images-idx3-ubyte.gz", 2051)
    m, labels = idx(root / "t10k-labels-idx1-ubyte.gz", 2049)
    assert n == m == 10000
    rows, cols = struct.unpack(">II", images[8:16])
    count = a.sample if a.sample > 0 else n
    (out / "raw" / "img").mkdir(parents=True, exist_ok=True)
    with open(out / "raw" / "images.jsonl", "w") as fi, open(out / "raw" / "captions.jsonl", "w") as fc:
        for i in range(count):
            pixels = images[16 + i * rows * cols:16 + (i + 1) * rows * cols]
            label = CLASSES[labels[8 + i]]
            name = f"t10k-{i:05d}"
            (out / "raw" / "img" / f"{name}.png").write_bytes(png(pixels, cols, rows))
            fi.write(json.dumps({"id": name, "file": f"img/{name}.png", "label": label,
                                 "kind": KIND.get(label, "clothing")}) + "\n")
            fc.write(json.dumps({"id": f"{name}-label", "image_id": name, "text": label}) + "\n")
    print(f"{count} images of {len(CLASSES)} classes")


if __name__ == "__main__":
    main()
