"""Turns one `bench/run` log into the Markdown tables of docs/PERFORMANCE.md, so
every figure there is regenerated, never typed:

    bench/run | tee bench-run.log
    python3 bench/figures.py bench-run.log > figures.md

Each lethe figure sits beside its peers, the ratio (above 1: lethe is faster) and,
for the training step, the floor (the step's matrix-product FLOPs at the machine's
best measured f32 product rate). A figure missing from the log is left out."""
import re
import sys

log = open(sys.argv[1]).read().splitlines()


def first(pattern):
    for line in log:
        m = re.search(pattern, line)
        if m:
            return m
    return None


def fmt(x):
    x = float(x)
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


ratios = {}
for line in log:
    m = re.match(r"ratio (\S+) ([0-9.]+)$", line)
    if m:
        ratios[m.group(1)] = m.group(2)

peers = first(r"^== peers: (.*)")
machine = first(r"^== machine: (.*)")
print(f"Peers: {peers.group(1) if peers else 'not recorded'}. Machine: {machine.group(1) if machine else 'not recorded'}.")
print()

# Search: the headline shape, then the shapes `lethe run` searches.
rows = []
shape = None
for line in log:
    m = re.match(r"search(\S*) lethe: (\d+) queries/s \(.*?, (\S+) scoring, top-10 of (\d+) x 512-d, (\d+) queries\)", line)
    if m:
        shape = {"name": m.group(1), "lethe": m.group(2), "scoring": m.group(3),
                 "gallery": int(m.group(4)), "queries": int(m.group(5))}
        rows.append(shape)
        continue
    m = re.match(r"search (numpy|faiss IndexFlatIP): (\d+) queries/s.*top-1 agreement with lethe ([0-9.]+)", line)
    if m and shape is not None:
        shape[m.group(1).split()[0]] = (m.group(2), m.group(3))
if rows:
    print("| exact top-10 search, 512-d | lethe | FAISS `IndexFlatIP` | numpy | ratio to FAISS | top-1 agreement |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        faiss = r.get("faiss", ("–", "–"))
        numpy = r.get("numpy", ("–", "–"))
        ratio = ratios.get(f"search_top10{r['name']}_vs_faiss", "–")
        print(f"| {r['queries']:,} queries × {r['gallery']:,} items | {fmt(r['lethe'])} q/s ({r['scoring']}) "
              f"| {fmt(faiss[0]) if faiss[0] != '–' else '–'} | {fmt(numpy[0]) if numpy[0] != '–' else '–'} "
              f"| **{ratio}** | {faiss[1]} |")
    print()

# Training step.
floor = first(r"train_step floor, the best measured rate: gemm (\d+), numpy's BLAS (\d+) GFLOP/s = ([0-9.]+) ms, (\d+) steps/s")
if floor is None:
    floor = first(r"train_step floor: .* at (\d+) GFLOP/s .* = ([0-9.]+) ms, (\d+) steps/s")
train = []
for line in log:
    m = re.match(r"train_step (\w+): fused ([0-9.]+) steps/s \(([0-9.]+) ms", line)
    if m:
        train.append(m.groups())
if train:
    if floor is not None and floor.re.groups == 4:
        print(f"Floor: the step's 2.33 GFLOP at the best measured f32 product rate (gemm {floor.group(1)}, "
              f"numpy's BLAS {floor.group(2)} GFLOP/s) = {floor.group(3)} ms, {floor.group(4)} steps/s.")
        print()
    eager, compiled = {}, {}
    for line in log:
        m = re.match(r"train_step_(\w+?)(_compiled)?: PyTorch(?: \(torch.compile\))? ([0-9.]+) steps/s", line)
        if m:
            (compiled if m.group(2) else eager)[m.group(1)] = m.group(3)
    share = {}
    for line in log:
        m = re.match(r"train_step (\w+): fused at (\d+)% of the best floor's speed", line)
        if m:
            share[m.group(1)] = m.group(2)
    print("| training step (batch 128) | lethe fused | share of the floor | PyTorch eager | ratio | `torch.compile` | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rate, _ms in train:
        print(f"| {name} | {fmt(rate)} steps/s | {share.get(name, '–')}% | {eager.get(name, '–')} "
              f"| **{ratios.get(f'train_step_{name}_vs_pytorch', '–')}** | {compiled.get(name, '–')} "
              f"| **{ratios.get(f'train_step_{name}_vs_torch_compile', '–')}** |")
    compile_times = [l for l in log if l.startswith("compile train_step_")]
    if compile_times:
        print()
        print("`torch.compile` time (excluded from its rate): " + "; ".join(
            re.sub(r"^compile train_step_(\w+) ([0-9.]+) s.*", r"\1 \2 s", l) for l in compile_times) + ".")
    print()

# Featurizing.
minilm = first(r"featurize lethe \(MiniLM, its CPU forward\): (\d+) captions/s")
minilm_peer = first(r"featurize PyTorch/transformers: (\d+) captions/s")
effnet = first(r"featurize lethe \(EfficientNet-Lite0, its CPU forward, JPEG to features\): ([0-9.]+) images/s")
effnet_net = first(r"featurize lethe, the network alone on decoded pixels: ([0-9.]+) images/s")
effnet_peer = first(r"featurize PyTorch \(Pillow \+ efficientnet-lite-pytorch, JPEG to features\): ([0-9.]+) images/s.*the network alone: ([0-9.]+) images/s")
if minilm or effnet:
    print("| featurizing | lethe | PyTorch | ratio |")
    print("| --- | --- | --- | --- |")
    if minilm and minilm_peer:
        print(f"| MiniLM, 1,000 captions (captions/s) | {minilm.group(1)} | {minilm_peer.group(1)} "
              f"| **{ratios.get('featurize_minilm_vs_pytorch', '–')}** |")
    if effnet and effnet_peer:
        print(f"| EfficientNet-Lite0, 500 JPEG photos, end to end (images/s) | {effnet.group(1)} | {effnet_peer.group(1)} "
              f"| **{ratios.get('featurize_efficientnet_vs_pytorch', '–')}** |")
    if effnet_net and effnet_peer:
        ratio = float(effnet_net.group(1)) / float(effnet_peer.group(2))
        print(f"| EfficientNet-Lite0, the network alone (images/s) | {effnet_net.group(1)} | {effnet_peer.group(2)} | {ratio:.2f} |")
    print()

# Whole runs.
for pattern in (r"^table1: .*", r"^table1 compute time.*", r"^lethe: .* wall from an empty cache.*",
                r"^PyTorch peer: .* wall.*", r"^ratio table1_vs_pytorch_script .*", r"^R@10 headline: .*",
                r"^synthetic-scale .*peak RSS.*", r"^synthetic-scale compute time.*"):
    m = first(pattern)
    if m:
        print(f"- {m.group(0)}")
# bench/scale-precomp: a heading line, then its stages indented.
for i, line in enumerate(log):
    if line.startswith("precomp-scale ("):
        print(f"- {line}")
        for stage in log[i + 1:i + 5]:
            if stage.startswith("  "):
                print(f"  - {stage.strip()}")
        break
