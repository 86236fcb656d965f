"""Restructure your own scikit-learn model for 4 workers in ten lines.

    python examples/restructure_sklearn.py [--quick]

``--quick`` (or the environment variable ``REPURPOSE_OPT_QUICK=1``, which CI sets) trains a smaller model
so the whole script takes a few seconds; the restructuring is the same.
"""

import os
import sys

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import repurpose_opt as ro

quick = "--quick" in sys.argv[1:] or os.environ.get("REPURPOSE_OPT_QUICK") == "1"
hidden, solver, iterations = ((32,), "lbfgs", 500) if quick else ((128, 64), "adam", 300)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16, y, test_size=0.3, random_state=0)
clf = MLPClassifier(hidden, solver=solver, max_iter=iterations, random_state=0).fit(X_train, y_train)   # any trained MLP

net = ro.Network.from_sklearn(clf)                                   # logits network, weights as numpy
cluster = ro.Cluster(k=4)                                            # 4 identical workers, default links
direct = ro.solve(ro.PartitionProblem(net, cluster), backend="direct")           # the dense split
problem = ro.RestructureProblem(net, cluster, calibration=X_train[:1000], tolerance=0.05)
sol = ro.solve(problem, backend="repurpose", seed=0)                 # placement + l0 pruning + refit

accuracy = (sol.network.forward(X_test).argmax(axis=1) == y_test).mean()
print(f"volume: {direct.objective:g} -> {sol.objective:g} scalars/sample ({direct.objective / sol.objective:.1f}x less)")
print(f"accuracy: {clf.score(X_test, y_test):.4f} -> {accuracy:.4f}")
print(f"guarantee: ||f_hat(x) - f(x)|| <= {sol.guarantee.A:.3g}*||x|| + {sol.guarantee.B:.3g} for every input x")
ro.save_solution(sol, "restructured-k4.npz")                         # then: repurpose-opt simulate / export / run
