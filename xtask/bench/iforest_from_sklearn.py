#!/usr/bin/env python3
"""Scores scikit-learn's own trees with Vigil's scorer: fits scikit-learn's
IsolationForest on a CSV (16 features + label), writes its trees as a
Vigil model (the agent's iforest.json format), has `vigil model score`
score the same vectors, and prints the largest difference from
scikit-learn's score_samples. With the trees equal, any difference would be
in path lengths, c(n), the height limit or the comparison at a split.

usage: iforest_from_sklearn.py VIGIL_BINARY DATA.csv WORK_DIR"""
import json
import os
import subprocess
import sys

import numpy as np
from sklearn.ensemble import IsolationForest

vigil, csv, work = sys.argv[1], sys.argv[2], sys.argv[3]
data = np.loadtxt(csv, delimiter=",")
# scikit-learn compares float32 features (x <= t); round them first so both
# sides see the same numbers, then x <= t is x < nextafter(t, +inf) in f64.
X = data[:, :16].astype(np.float32).astype(np.float64)
model = IsolationForest(n_estimators=100, max_samples=256, random_state=0, n_jobs=1).fit(X)

trees = []
for est in model.estimators_:
    t = est.tree_
    nodes = []
    for i in range(t.node_count):
        left, right = int(t.children_left[i]), int(t.children_right[i])
        if left == -1:
            nodes.append({"Leaf": {"size": int(t.n_node_samples[i])}})
        else:
            nodes.append({"Split": {
                "feature": int(t.feature[i]),
                "value": float(np.nextafter(t.threshold[i], np.inf)),
                "left": left,
                "right": right,
            }})
    trees.append({"nodes": nodes})
vigil_model = {
    "forest": {"trees": trees, "psi": int(model.max_samples_), "features": 16, "seed": 0},
    "train_scores": [0.5],
    "medians": [0.0] * 16,
    "mads": [1.0] * 16,
    "trained_at": 0.0,
    "trained_on": int(model.max_samples_),
}
os.makedirs(work, exist_ok=True)
model_path = os.path.join(work, "sklearn-as-vigil.json")
vectors_path = os.path.join(work, "vectors-f32.csv")
with open(model_path, "w") as f:
    json.dump(vigil_model, f)
np.savetxt(vectors_path, X, delimiter=",", fmt="%.17g")
out = subprocess.run([vigil, "model", "score", "--model", model_path, "--csv", vectors_path],
                     check=True, capture_output=True, text=True).stdout
ours = np.array([float(s) for s in out.split()])
theirs = -model.score_samples(X)
diff = np.abs(ours - theirs)
print(json.dumps({
    "vectors": len(X),
    "max_abs_diff": float(diff.max()),
    "vectors_differing_by_more_than_1e-12": int((diff > 1e-12).sum()),
}))
