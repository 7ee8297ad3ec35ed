#!/usr/bin/env python3
"""Compares two `tinysql-eap attribute --scores-out` files: a reference (CPU, computed on the
build machine) and a result (CUDA, or another CPU run). Standard library only, except that two
sweep folders (`tinysql-eap run` outputs) are compared cell by cell from their HDF5 unit files,
which needs h5py.

    compare_scores.py REF.json GOT.json [--tol REL] [--top K] [--label NAME]
    compare_scores.py REF_SWEEP/ GOT_SWEEP/ [...]      every cell of REF_SWEEP, all its units
    compare_scores.py --measure REF.json GOT.json      (prints the deviations, never fails)

Passes when, on every batch of the cell:
  - the graph (upstream, downstream, valid edges) and the batch shapes are the same;
  - max |got - ref| over all edges and batches <= REL * max |ref| (the largest score of the cell);
  - max |LD_got - LD_ref| over all prompts <= REL * max(1, max |LD_ref|) (clean and corrupt);
  - the top-K edges by |score| are the same set, except for edges whose |score| lies within
    REL * max |ref| of the K-th largest in the reference (a tie at that tolerance may swap).
The consistent edges of the cell (top-n of every batch) are reported, not judged: they follow
from the per-batch rankings checked above.
Exit 0: pass, 1: fail, 2: bad usage or unreadable input (one line naming the file).
"""
import argparse
import json
import math
import sys


def die(msg):
    print(f"compare_scores: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
    except OSError as e:
        die(f"{path}: {e.strerror}")
    except ValueError as e:
        die(f"{path}: not JSON ({e})")
    for key in ("upstream", "downstream", "valid", "batches"):
        if key not in j:
            die(f"{path}: no '{key}' (not an attribute --scores-out file)")
    n = len(j["upstream"]) * len(j["downstream"])
    if len(j["valid"]) != n:
        die(f"{path}: 'valid' has {len(j['valid'])} entries, not {n}")
    for i, b in enumerate(j["batches"]):
        for key in ("scores", "clean_ld", "corrupt_ld", "n_prompts", "n_positions"):
            if key not in b:
                die(f"{path}: batch {i} has no '{key}'")
        if len(b["scores"]) != n:
            die(f"{path}: batch {i} has {len(b['scores'])} scores, not {n}")
        if any(x is None for x in b["scores"]):
            die(f"{path}: batch {i} has a NaN score")
    return j


def load_sweep(path):
    """cell id -> the --scores-out form of its units (units/<cell>/bNNNNN.h5), batches in order."""
    import glob
    import os

    try:
        import h5py
    except ImportError:
        die("comparing sweep folders needs h5py")
    cells = {}
    for cell_dir in sorted(glob.glob(os.path.join(path, "units", "*"))):
        files = sorted(glob.glob(os.path.join(cell_dir, "b[0-9]*.h5")))
        if not files:
            continue
        j = {"batches": []}
        for fn in files:
            try:
                with h5py.File(fn, "r") as f:
                    names = lambda d: [x.decode() if isinstance(x, bytes) else str(x) for x in f[d][()]]
                    j["upstream"], j["downstream"] = names("upstream"), names("downstream")
                    j["valid"] = [int(x) for x in f["valid"][()].reshape(-1)]
                    clean = [float(x) for x in f["clean_logit_diff"][()]]
                    j["batches"].append({
                        "scores": [float(x) for x in f["scores"][()].reshape(-1)],
                        "clean_ld": clean,
                        "corrupt_ld": [float(x) for x in f["corrupt_logit_diff"][()]],
                        "n_prompts": len(clean),
                        "n_positions": int(f.attrs["n_positions"]),
                    })
            except (OSError, KeyError) as e:
                die(f"{fn}: not a unit file ({e})")
        cells[os.path.basename(cell_dir)] = j
    if not cells:
        die(f"{path}: no unit files under units/ (not a sweep folder)")
    return cells


def top_k(scores, valid, k):
    """Edge indices of the k largest |score| among valid edges, ties by index (as topn.cpp)."""
    idx = [i for i, v in enumerate(valid) if v]
    idx.sort(key=lambda i: (-abs(scores[i]), i))
    return idx[:k]


def compare(ref, got, tol, k):
    """(ok, summary line, detail lines)."""
    problems, details = [], []
    for key in ("upstream", "downstream", "valid"):
        if ref[key] != got[key]:
            return False, f"the graphs differ ({key})", []
    if len(ref["batches"]) != len(got["batches"]):
        return False, f"{len(ref['batches'])} batches against {len(got['batches'])}", []
    valid = ref["valid"]
    scale = max((abs(s) for b in ref["batches"] for s, v in zip(b["scores"], valid) if v), default=0.0)
    if not scale > 0:
        return False, "the reference's scores are all zero", []
    err = 0.0
    ld_scale, ld_err = 1.0, 0.0
    top_same = top_tied = 0
    for i, (rb, gb) in enumerate(zip(ref["batches"], got["batches"])):
        if (rb["n_prompts"], rb["n_positions"]) != (gb["n_prompts"], gb["n_positions"]):
            problems.append(f"batch {i}: {rb['n_prompts']}x{rb['n_positions']} prompts x tokens against "
                            f"{gb['n_prompts']}x{gb['n_positions']}")
            continue
        rs, gs = rb["scores"], gb["scores"]
        e = max(abs(a - b) for a, b, v in zip(rs, gs, valid) if v)
        if not math.isfinite(e):
            problems.append(f"batch {i}: non-finite scores")
            continue
        err = max(err, e)
        for key in ("clean_ld", "corrupt_ld"):
            if len(rb[key]) != len(gb[key]) or any(x is None for x in gb[key]):
                problems.append(f"batch {i}: {key} differs in length or holds NaN")
                continue
            ld_scale = max(ld_scale, max((abs(x) for x in rb[key]), default=0.0))
            ld_err = max(ld_err, max((abs(a - b) for a, b in zip(rb[key], gb[key])), default=0.0))
        rt, gt = top_k(rs, valid, k), top_k(gs, valid, k)
        if set(rt) == set(gt):
            top_same += 1
            continue
        kth = abs(rs[rt[-1]])
        swapped = set(rt) ^ set(gt)
        far = [j for j in swapped if abs(abs(rs[j]) - kth) > tol * scale]
        if far:
            names = [f"{ref['upstream'][j // len(ref['downstream'])]}->{ref['downstream'][j % len(ref['downstream'])]}"
                     for j in sorted(far)[:4]]
            problems.append(f"batch {i}: top-{k} differs beyond ties ({', '.join(names)})")
        else:
            top_tied += 1
            details.append(f"batch {i}: top-{k} differs only by edges tied within the tolerance")
    rel, ld_rel = err / scale, ld_err / ld_scale
    if rel > tol:
        problems.append(f"max |score diff| / max |score| = {rel:.3g} > {tol:g}")
    if ld_rel > tol:
        problems.append(f"max |LD diff| / max |LD| = {ld_rel:.3g} > {tol:g}")
    re_, ge = ref.get("edges"), got.get("edges")
    if re_ is not None and ge is not None:
        rset = {(x["up"], x["down"]) for x in re_}
        gset = {(x["up"], x["down"]) for x in ge}
        edges = "consistent edges identical" if rset == gset else f"consistent edges differ by {len(rset ^ gset)}"
    else:
        edges = "no consistent edges recorded"
    nb = len(ref["batches"])
    summary = (f"score err {rel:.2e}, LD err {ld_rel:.2e} (tol {tol:g}); top-{k} same in {top_same}/{nb} batches"
               + (f", tied in {top_tied}" if top_tied else "") + f"; {edges}")
    compare.last = (rel, ld_rel)
    return not problems, summary, problems + details


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ref")
    ap.add_argument("got")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    ap.add_argument("--top", type=int, default=10, help="K of the top-K check (default 10)")
    ap.add_argument("--label", default="", help="name printed before the verdict")
    ap.add_argument("--measure", action="store_true", help="print the deviations only; exit 0")
    a = ap.parse_args()
    if not (a.tol > 0 and math.isfinite(a.tol)):
        die(f"--tol must be a positive number, not {a.tol}")
    if a.top < 1:
        die(f"--top must be at least 1, not {a.top}")
    import os

    label = f"{a.label}: " if a.label else ""
    if os.path.isdir(a.ref) or os.path.isdir(a.got):
        if not (os.path.isdir(a.ref) and os.path.isdir(a.got)):
            die("give two sweep folders or two --scores-out files, not one of each")
        refs, gots = load_sweep(a.ref), load_sweep(a.got)
        bad, worst, worst_ld = 0, 0.0, 0.0
        for cell, ref in refs.items():
            if cell not in gots:
                print(f"FAIL {label}{cell}: missing from {a.got}")
                bad += 1
                continue
            ok, summary, lines = compare(ref, gots[cell], a.tol, a.top)
            if not a.measure:
                print(f"{'PASS' if ok else 'FAIL'} {label}{cell}: {summary}")
                for line in lines:
                    print(f"    {line}")
            else:
                print(f"{label}{cell}: {summary}")
            bad += not ok
            worst, worst_ld = max(worst, compare.last[0]), max(worst_ld, compare.last[1])
        units = sum(len(j["batches"]) for j in refs.values())
        verdict = "PASS" if not bad else "FAIL"
        print(f"{verdict} {label}{len(refs) - bad}/{len(refs)} cells ({units} units) agree: max score err "
              f"{worst:.2e}, LD err {worst_ld:.2e} (tol {a.tol:g})")
        return 0 if a.measure or not bad else 1
    ref, got = load(a.ref), load(a.got)
    ok, summary, lines = compare(ref, got, a.tol, a.top)
    if a.measure:
        print(f"{label}{summary}")
        return 0
    print(f"{'PASS' if ok else 'FAIL'} {label}{summary}")
    for line in lines:
        print(f"    {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
