"""The Table 1 headline recalls of two runs side by side, each figure flagged
"within seed std" or not: a lethe run (its directory: summary.arrow, pipeline.json,
run.json) or a peer run (the JSON table1_torch.py --out writes), either against either.
Two runs of one engine with different seeds calibrate the flags: how often two sets
of 3 seeds of the same code fall apart by chance.

The headline figures: the average over tasks with the task known (per-task gallery)
and the union total (task unknown, every task's queries pooled), both directions,
every K; the table shows the largest K, as lethe's headline.txt does.

A figure agrees when |mean_A - mean_B| <= the pooled seed std,
sqrt((std_A^2 + std_B^2) / 2) (sample stds over the seeds). For two draws of one
procedure that holds for about 78% of the figures (the difference of two means of 3
has a std of sqrt(2/3) seed stds), less with stds estimated from 3 seeds, so the count
within 2 standard errors of the difference, 2 * sqrt(std_A^2 / n_A + std_B^2 / n_B),
is printed too.

Usage: table1_compare.py A B [--lethe-seconds S] [--peer-seconds S]
  A, B: a lethe run directory or a peer JSON each. With both times, the last
  line is `ratio table1_vs_pytorch_script <peer seconds / lethe seconds>`.
"""
import argparse
import json
import math
import os
import sys

HEADLINE = {("average", "per_task"): "avg", ("total", "union"): "union total"}


def read(path):
    """(name, figures {(variant, direction, figure, k): (mean, std, n)}, variant order, info)."""
    if os.path.isdir(path):
        import pyarrow.ipc as ipc
        summary = ipc.open_file(os.path.join(path, "summary.arrow")).read_all().to_pylist()
        stats = {}
        for r in summary:
            name = HEADLINE.get((r["metric"], r["gallery"]))
            if name and r["statistic"] in ("mean", "std"):
                key = (r["variant"], r["direction"], name, r["k"])
                stats.setdefault(key, {})[r["statistic"]] = r["value"]
                stats[key]["n"] = r["n_seeds"]
        figures = {k: (v["mean"], v["std"], v["n"]) for k, v in stats.items()}
        # Pipeline order (variant lines, then model.share), as lethe's headline.txt.
        order = list(dict.fromkeys(v["label"] for v in json.load(open(os.path.join(path, "pipeline.json")))))
        run = json.load(open(os.path.join(path, "run.json")))
        label = "lethe" if run["seeds"] == [1, 2, 3] else "lethe seeds " + ",".join(map(str, run["seeds"]))
        return label, figures, order, run
    peer = json.load(open(path))
    figures = {}
    for f in peer["figures"]:
        name = HEADLINE.get((f["metric"], f["gallery"]))
        if name:
            figures[(f["variant"], f["direction"], name, f["k"])] = (f["mean"], f["std"], f["n_seeds"])
    order = list(dict.fromkeys(f["variant"] for f in peer["figures"]))
    label = "peer" if peer["seeds"] == [1, 2, 3] else "peer seeds " + ",".join(map(str, peer["seeds"]))
    return label, figures, order, peer


def compare(a, b):
    (ma, sa, na), (mb, sb, nb) = a, b
    diff = mb - ma
    pooled = math.sqrt((sa ** 2 + sb ** 2) / 2)
    two_se = 2 * math.sqrt(sa ** 2 / na + sb ** 2 / nb)
    return diff, abs(diff) <= pooled + 1e-9, abs(diff) <= two_se + 1e-9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--lethe-seconds", type=float)
    parser.add_argument("--peer-seconds", type=float)
    args = parser.parse_args()
    name_a, fa, order, info_a = read(args.a)
    name_b, fb, _, info_b = read(args.b)
    missing = sorted(set(fa) ^ set(fb))
    if missing:
        sys.exit(f"figures in one table only: {missing[:5]}")

    k_max = max(key[3] for key in fa)
    width = max(len(v) for v in order)
    quick = info_b.get("quick") or info_a.get("quick")
    print(f"\nheadline R@{k_max}, mean ± std over seeds ({name_a} | {name_b} | {name_b} - {name_a})"
          f"{'  [--quick: NOT the protocol]' if quick else ''}")
    print(f"{'variant':<{width}}  {'figure':<24} {name_a[:12]:>12} {name_b[:12]:>12} {'diff':>7}  agreement")
    for v in order:
        for d in ("im2txt", "txt2im"):
            for name in ("avg", "union total"):
                key = (v, d, name, k_max)
                (ma, sa, _), (mb, sb, _) = fa[key], fb[key]
                diff, within, _ = compare(fa[key], fb[key])
                print(f"{v:<{width}}  {d + ' ' + name + ' R@' + str(k_max):<24} "
                      f"{ma:>5.1f} ± {sa:<4.1f} {mb:>5.1f} ± {sb:<4.1f} {diff:>+7.1f}  "
                      f"{'within seed std' if within else 'OUTSIDE seed std'}")
    print()
    for label, keys in ((f"R@{k_max} headline", [k for k in fa if k[3] == k_max]),
                        ("every K (R@1/5/10)", list(fa))):
        results = [compare(fa[k], fb[k]) for k in keys]
        print(f"{label}: {sum(r[1] for r in results)}/{len(keys)} figures within the seed std, "
              f"{sum(r[2] for r in results)}/{len(keys)} within 2 standard errors of the difference")
    for name in ("avg", "union total"):
        diffs = [compare(fa[k], fb[k])[0] for k in fa if k[2] == name and k[3] == k_max]
        print(f"mean difference {name_b} - {name_a}, {name} R@{k_max}: {sum(diffs) / len(diffs):+.2f} points "
              f"over {len(diffs)} figures")
    if args.lethe_seconds and args.peer_seconds:
        run = info_a
        print(f"\nlethe: {args.lethe_seconds:.1f} s wall from an empty cache ({run['wall_seconds']:.1f} s in "
              f"run.json, {run['variants']} variants, {run['nodes']['executed']} nodes)")
        print(f"PyTorch peer: {args.peer_seconds:.1f} s wall ({info_b['wall_seconds']:.1f} s after imports, "
              f"{info_b['threads']} threads, {info_b['epochs']} epochs"
              f"{', QUICK: NOT the protocol' if info_b['quick'] else ''})")
        print(f"figure table1_lethe_seconds {args.lethe_seconds:.1f}")
        print(f"figure table1_pytorch_script_seconds {args.peer_seconds:.1f}")
        print(f"ratio table1_vs_pytorch_script {args.peer_seconds / args.lethe_seconds:.2f}")


if __name__ == "__main__":
    main()
