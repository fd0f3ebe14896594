#!/usr/bin/env python3
"""Side-by-side of Vigil's Isolation Forest and scikit-learn's on the same
vectors, same settings (100 trees, max_samples=256, one thread, pinned to
one core as the Rust bench is). Reads the CSVs (16 features + label) and the
JSON of our figures that `cargo bench --bench detect` wrote to DIR, runs
scikit-learn, and prints one table: AUC over seeds 0-4 (or as many as the
bench used, VIGIL_FOREST_SEEDS) per data shape, then
scoring vectors/s (CPU time of the scoring thread, and wall time)."""
import json
import os
import sys
import time

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

SHAPES = ["planted", "correlated", "clustered"]


def forest(seed):
    return IsolationForest(n_estimators=100, max_samples=256, random_state=seed, n_jobs=1)


def load(d, name):
    data = np.loadtxt(os.path.join(d, f"vigil-iforest-{name}.csv"), delimiter=",")
    return data[:, :16], data[:, 16].astype(bool)


def best_of_5(f):
    wall, cpu = [], []
    for _ in range(5):
        w, c = time.perf_counter(), time.thread_time()
        f()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return min(wall), min(cpu)


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "vigil-iforest-ours.json")) as f:
        ours = json.load(f)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    seeds = range(ours.get("seeds", 5))
    rows = []
    with threadpool_limits(1):
        for name in SHAPES:
            X, y = load(d, name)
            aucs = [roc_auc_score(y, -forest(s).fit(X).score_samples(X)) for s in seeds]
            o = ours[name]
            rows.append((
                f"AUC, {name}, seeds 0-{len(seeds) - 1} (mean [min, max])",
                f"{o['auc_mean']:.4f} [{o['auc_min']:.4f}, {o['auc_max']:.4f}]",
                f"{np.mean(aucs):.4f} [{np.min(aucs):.4f}, {np.max(aucs):.4f}]",
            ))
        X, _ = load(d, "planted")
        w, c = time.perf_counter(), time.thread_time()
        model = forest(0).fit(X)
        fit_cpu, fit_wall = time.thread_time() - c, time.perf_counter() - w
        wall, cpu = best_of_5(lambda: model.score_samples(X))
    n = len(X)
    s = ours["speed"]
    rows += [
        ("fit, 16,384 vectors, s CPU (wall)",
         f"{s['fit_cpu_s']:.3f} ({s['fit_wall_s']:.3f})", f"{fit_cpu:.3f} ({fit_wall:.3f})"),
        ("scoring, vectors per CPU second (batch)",
         f"{s['batch_per_cpu_s']:,.0f}", f"{n / cpu:,.0f}"),
        ("scoring, vectors per wall second (batch)",
         f"{s['batch_per_wall_s']:,.0f}", f"{n / wall:,.0f}"),
        ("scoring one at a time, vectors per CPU second",
         f"{s['single_per_cpu_s']:,.0f}", "—"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"  {'isolation forest, same vectors':<{width}}  {'ours':>26}  {'scikit-learn':>26}")
    for label, a, b in rows:
        print(f"  {label:<{width}}  {a:>26}  {b:>26}")
    print(f"  scoring speed-up: {s['batch_per_cpu_s'] * cpu / n:.1f}x per CPU second, "
          f"{s['batch_per_wall_s'] * wall / n:.1f}x per wall second")


main()
