#!/usr/bin/env python3
"""Builds bench/search's second lookup table from REAL trainings.

Space (continuous and conditional parameters; `search-table2.toml` beside
this file says the same in nas-search's TOML form):
  n_layers 1..3; width_k in {16, 32, 64, 128} for k <= n_layers;
  activation relu/gelu/tanh; batch_size 128/256/512;
  learning_rate log-uniform [1e-4, 3e-2]; weight_decay log-uniform
  [1e-6, 1e-1]; dropout uniform [0, 0.5];
  optimizer adamw/sgd; momentum uniform [0.5, 0.99] only with sgd.
A seeded random sequence of configurations (seed 2026) is trained one by
one with `nas-client train --json` (8 epochs, threads 1) on a bundled
dataset, energy from energyd (estimated on a VM without RAPL). Each result
is appended to the CSV as soon as it is known, so the build can be stopped
and resumed (rows already present are skipped); the table is the first
rows of the sequence that finished. Failed trainings are recorded in a
side file and skipped.

usage: search-table2.py OUT.csv --nas-client BIN --socket SOCK
           [--dataset magic] [--count 1200] [--workers 2] [--epochs 8]
"""
import argparse
import concurrent.futures as cf
import csv
import json
import math
import os
import random
import subprocess
import sys
import threading
import time

PARAMS = ["n_layers", "width_1", "width_2", "width_3", "activation", "batch_size",
          "learning_rate", "weight_decay", "dropout", "optimizer", "momentum"]
METRICS = ["val_accuracy", "test_accuracy", "inference_energy_j_per_1k", "training_energy_j",
           "flops", "params", "train_time_s"]


def sample_configs(count, seed=2026):
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = rng.choice([1, 2, 3])
        c = {"index": i, "n_layers": n}
        for k in (1, 2, 3):
            c[f"width_{k}"] = rng.choice([16, 32, 64, 128]) if k <= n else ""
        c["activation"] = rng.choice(["relu", "gelu", "tanh"])
        c["batch_size"] = rng.choice([128, 256, 512])
        # Rounded to 4 significant digits so table cells are short and exact.
        c["learning_rate"] = float(f"{math.exp(rng.uniform(math.log(1e-4), math.log(3e-2))):.4g}")
        c["weight_decay"] = float(f"{math.exp(rng.uniform(math.log(1e-6), math.log(1e-1))):.4g}")
        c["dropout"] = round(rng.uniform(0.0, 0.5), 4)
        c["optimizer"] = rng.choice(["adamw", "sgd"])
        c["momentum"] = round(rng.uniform(0.5, 0.99), 4) if c["optimizer"] == "sgd" else ""
        out.append(c)
    return out


def train(args, c):
    widths = [str(c[f"width_{k}"]) for k in range(1, c["n_layers"] + 1)]
    cmd = [args.nas_client, "train", "--dataset", args.dataset, "--arch", "-".join(widths),
           "--activation", c["activation"], "--batch-size", str(c["batch_size"]),
           "--lr", str(c["learning_rate"]), "--weight-decay", str(c["weight_decay"]),
           "--dropout", str(c["dropout"]), "--optimizer", c["optimizer"],
           "--epochs", str(args.epochs), "--seed", "0", "--threads", "1",
           "--socket", args.socket, "--json"]
    if c["optimizer"] == "sgd":
        cmd += ["--momentum", str(c["momentum"])]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[-1:] or ["exit %d" % p.returncode]
    v = None
    try:
        v = json.loads(p.stdout)
    except json.JSONDecodeError:
        pass
    for line in ([] if isinstance(v, dict) else reversed(p.stdout.strip().splitlines())):
        try:
            v = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(v, dict):
        return None, ["no JSON"]

    def at(path):
        node = v
        for k in path.split("."):
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node if isinstance(node, (int, float)) and math.isfinite(node) else None

    m = {
        "val_accuracy": at("val.accuracy"),
        "test_accuracy": at("test.accuracy"),
        "inference_energy_j_per_1k": at("energy.inference_j_per_1000_rows"),
        "training_energy_j": at("energy.train.process_j"),
        "flops": at("flops_per_row_inference"),
        "params": at("parameters"),
        "train_time_s": (at("train_wall_ns") or 0) / 1e9,
    }
    if m["val_accuracy"] is None or m["inference_energy_j_per_1k"] is None:
        return None, ["no accuracy or inference energy in the report"]
    provs = set()
    for phase in ("train", "inference"):
        node = v.get("energy", {}).get(phase, {})
        if isinstance(node, dict) and node.get("provenance"):
            provs.add(str(node["provenance"]).lower())
    order = ["simulated", "estimated", "measured"]
    m["provenance"] = next((p for p in order if p in provs), "unknown")
    return m, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--nas-client", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--dataset", default="magic")
    ap.add_argument("--count", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {int(r["index"]) for r in csv.DictReader(f)}
    failed_path = args.out + ".failed"
    if os.path.exists(failed_path):
        with open(failed_path) as f:
            done |= {int(l.split()[0]) for l in f if l.strip()}
    header = ["index"] + PARAMS + METRICS + ["provenance"]
    new = not os.path.exists(args.out)
    lock = threading.Lock()
    todo = [c for c in sample_configs(args.count) if c["index"] not in done]
    print(f"table2: {len(done)} done, {len(todo)} to train", file=sys.stderr, flush=True)
    start = time.time()
    with open(args.out, "a", newline="") as f, open(failed_path, "a") as ff:
        w = csv.writer(f)
        if new:
            w.writerow(header)
            f.flush()
        n = 0

        def job(c):
            return c, train(args, c)

        with cf.ThreadPoolExecutor(args.workers) as ex:
            for c, (m, err) in ex.map(job, todo):
                with lock:
                    if m is None:
                        ff.write(f"{c['index']} {' '.join(err)}\n")
                        ff.flush()
                        continue
                    w.writerow([c["index"]] + [c[p] for p in PARAMS] +
                               [m[k] for k in METRICS] + [m["provenance"]])
                    f.flush()
                    n += 1
                    if n % 10 == 0:
                        rate = n / (time.time() - start)
                        print(f"table2: {len(done) + n} rows ({rate * 60:.1f}/min)",
                              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
