#!/usr/bin/env python3
"""Side-by-side reference for Vigil's Isolation Forest: scikit-learn's
IsolationForest on the same CSV (16 features + label), same settings
(100 trees, max_samples=256). Prints one JSON line: AUC, fit seconds and
scoring vectors per second (one thread)."""
import json
import sys
import time

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

data = np.loadtxt(sys.argv[1], delimiter=",")
X, y = data[:, :16], data[:, 16].astype(bool)
with threadpool_limits(1):
    t = time.perf_counter()
    model = IsolationForest(n_estimators=100, max_samples=256, random_state=0, n_jobs=1).fit(X)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    scores = -model.score_samples(X)
    score_s = time.perf_counter() - t
    aucs = [
        roc_auc_score(y, -IsolationForest(n_estimators=100, max_samples=256, random_state=s, n_jobs=1).fit(X).score_samples(X))
        for s in range(5)
    ]
print(json.dumps({
    "auc": round(float(roc_auc_score(y, scores)), 4),
    "auc_mean_seeds_0_4": round(float(np.mean(aucs)), 4),
    "auc_min": round(float(np.min(aucs)), 4),
    "auc_max": round(float(np.max(aucs)), 4),
    "fit_s": round(fit_s, 4),
    "vectors_per_s": round(len(X) / score_s),
    "n": len(X),
}))
