#!/usr/bin/env python3
"""Benchmark (not a test): the memory of the ranks of one node (issue 17). Writes a random checkpoint of
the real BM2 shape (Qwen2.5-0.5B: 24 layers, 14/2 heads, d 896, vocabulary 151936; `make-model --preset
bm2`), runs the same sweep (2 batches of 30 prompts) with 1 rank and with 2 ranks of one thread, samples
every rank's /proc/PID/smaps_rollup every 50 ms, and prints the peak of the ranks' summed PSS (each
shared page counted once for the node: what the node's memory holds) and summed RSS (shared pages
counted in every rank), and the 2-rank / 1-rank ratio of the PSS (target at most 1.3).

Usage: bench/bench_memory.py [--bin BIN] [--stored float32|bfloat16] [--dtype float32|bfloat16]
                             [--batch-size N] [--memory-budget SIZE] [--preset bm1|bm2|bm3]
With --stored bfloat16 and --dtype float32 (the real checkpoints' case), one rank converts privately
and two ranks share one conversion in $TEAP_WEIGHTS_CACHE (a temporary folder here)."""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = {"bm1": "gpt2", "bm2": "qwen2", "bm3": "llama3"}


def rollup(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def rank_pids(root_pid):
    """Every tinysql-eap process below root_pid (mpirun's children, or the process itself)."""
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "tinysql-eap":
                    found.append(pid)
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def sweep(args, job, ranks, env):
    cmd = [args.bin, "run", job]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks)] + (["--allow-run-as-root"] if os.getuid() == 0 else []) + cmd
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = {"Pss": 0, "Rss": 0, "Private": 0}
    while p.poll() is None:
        rolls = [rollup(pid) for pid in rank_pids(p.pid)]
        sums = {"Pss": sum(r.get("Pss", 0) for r in rolls), "Rss": sum(r.get("Rss", 0) for r in rolls),
                "Private": sum(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0) for r in rolls)}
        for k in peak:
            peak[k] = max(peak[k], sums[k])
        time.sleep(0.05)
    out = p.stdout.read()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{out}")
    return peak, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/src/tinysql-eap"))
    ap.add_argument("--tokenizers", default=os.environ.get("TEAP_TOKENIZERS", os.path.join(ROOT, ".cache/tokenizers")))
    ap.add_argument("--preset", default="bm2", choices=["bm1", "bm2", "bm3"])
    ap.add_argument("--stored", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=30)
    ap.add_argument("--memory-budget", default="auto")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="teap-bench-memory.")
    try:
        model = os.path.join(tmp, "model")
        subprocess.run([args.bin, "make-model", "--preset", args.preset, "--vocab-from",
                        os.path.join(args.tokenizers, TOKENIZER[args.preset]), "--out", model]
                       + (["--bf16"] if args.stored == "bfloat16" else []), check=True, stdout=subprocess.DEVNULL)
        bm = args.preset[-1]
        env = dict(os.environ, TEAP_WEIGHTS_CACHE=os.path.join(tmp, "cache"))
        results = {}
        for ranks in (1, 2):
            job = os.path.join(tmp, f"job{ranks}.toml")
            with open(job, "w") as f:
                f.write(f'output = "{tmp}/out{ranks}"\n[grid]\nmodels = [{bm}]\ncommandsets = [1]\nfeatures = ["EngTableName"]\n'
                        f'[settings]\nbatch_size = {args.batch_size}\nbatches = 2\nthreads = 1\ndtype = "{args.dtype}"\n'
                        f'memory_budget = "{args.memory_budget}"\n'
                        f'[models.BM{bm}]\ncs1 = "{model}"\ntokenizer = "{model}"\n')
            dry = subprocess.run([args.bin, "run", job, "--dry-run"], capture_output=True, text=True, env=env)
            estimate = [l for l in dry.stdout.splitlines() if l.startswith("memory:")]
            results[ranks] = sweep(args, job, ranks, env)
            (peak, secs) = results[ranks]
            print(f"{ranks} rank(s): peak PSS {peak['Pss'] / 2**30:6.2f} GiB, peak RSS {peak['Rss'] / 2**30:6.2f} GiB, "
                  f"peak private {peak['Private'] / 2**30:6.2f} GiB, {secs:5.1f} s (2 units)")
            for line in estimate:
                print("   " + line.replace(model, "MODEL"))
        ratio = results[2][0]["Pss"] / results[1][0]["Pss"]
        print(f"{args.preset} stored {args.stored}, run {args.dtype}, batch {args.batch_size}, memory_budget {args.memory_budget}: "
              f"2 ranks / 1 rank resident memory (summed PSS) = {ratio:.2f} (target <= 1.3)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
