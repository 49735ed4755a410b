"""Benchmark: female trees evaluated per second on N curves, vectorised vs DEAP's per-row way.

    python3 experiments/bench_predictors.py [--curves FILE] [--n-curves 500] [--trees 2000]

Scored: the whole fitness of one tree as the GP computes it (genes compiled,
linear scaling by least squares, the objective with per-task Spearman and
regret).

Vectorised: ``trees.compile_tree`` builds a numpy closure once per tree and
applies it to whole feature columns. Per-row: DEAP's usual ``gp.compile``
(a lambda over scalars) called once per curve, measured twice: with the
same numpy primitives, and with pure-Python ``math`` primitives (DEAP's
tutorial style, the faster per-row variant). Compilation is included in
every figure. Trees are ramped half-and-half of depth 2-4 (about 10 nodes,
the size the evolved predictors reach).
"""

from __future__ import annotations

import argparse
import math
import operator
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
from deap import gp as deap_gp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from gpnas.predict import fitness as fit  # noqa: E402
from gpnas.predict import trees  # noqa: E402
from gpnas.predict.curves import Curve, read_curves  # noqa: E402
from gpnas.predict.features import CURVE_FEATURES, feature_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the main checkout, or beside the worktrees' folder
DEFAULT_CURVES = next((p / "shared/data/curves/taskset_dev.jsonl" for p in (ROOT.parent, ROOT.parent.parent)
                       if (p / "shared/data/curves/taskset_dev.jsonl").exists()),
                      ROOT.parent / "shared/data/curves/taskset_dev.jsonl")


def scalar_pset(names):
    """The same primitives on Python floats (math), for DEAP's per-row evaluation."""
    def pdiv(a, b):
        return a / b if abs(b) > trees.DIV_EPS else 1.0

    def cexp(a):
        return math.exp(min(a, trees.EXP_MAX))

    pset = deap_gp.PrimitiveSet("FEMALE_SCALAR", len(names))
    for name, func, arity in [("add", operator.add, 2), ("sub", operator.sub, 2), ("mul", operator.mul, 2),
                              ("pdiv", pdiv, 2), ("min2", min, 2), ("max2", max, 2),
                              ("neg", operator.neg, 1), ("plog", lambda a: math.log(abs(a) + trees.LOG_EPS), 1),
                              ("cexp", cexp, 1), ("sqrt_abs", lambda a: math.sqrt(abs(a)), 1)]:
        pset.addPrimitive(func, arity, name=name)
    pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(names)})
    return pset


def per_row_math(tree, pset, X, names):
    f = deap_gp.compile(str(tree), pset)
    cols = [X[n].tolist() for n in names]
    out = []
    for row in zip(*cols):
        try:
            out.append(f(*row))
        except (OverflowError, ValueError, ZeroDivisionError):
            out.append(0.0)
    return out


def rate(fn, trees, budget_s):
    """Trees per second, over as many trees as fit in budget_s (at least 5)."""
    start, done = time.perf_counter(), 0
    for tree in trees:
        fn(tree)
        done += 1
        if done >= 5 and time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start), done


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", default=str(DEFAULT_CURVES))
    ap.add_argument("--n-curves", type=int, default=500)
    ap.add_argument("--trees", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0, help="time budget per method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simplify", type=int, default=0, metavar="N",
                    help="also time simplify_bounded on the first N trees")
    ap.add_argument("--simplify-timeout", type=float, default=2.0)
    ap.add_argument("--min-depth", type=int, default=2)
    ap.add_argument("--max-depth", type=int, default=4, help="trees of 2-4 levels: the size evolved trees reach")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    path = Path(args.curves)
    if path.exists():
        curves = read_curves(path)
        curves = [curves[i] for i in rng.choice(len(curves), min(args.n_curves, len(curves)), replace=False)]
        source = f"{path.name} ({len(curves)} curves sampled)"
    else:  # synthetic power laws, so the benchmark runs anywhere
        t = np.arange(1, 52)
        curves = [Curve(values=rng.uniform(0.5, 3) * (0.3 + t ** -rng.uniform(0.2, 1.5)), task="synthetic")
                  for _ in range(args.n_curves)]
        source = f"synthetic power laws ({len(curves)} curves)"
    X = feature_matrix(curves, 0.2)
    names = list(CURVE_FEATURES)
    pset = trees.make_pset(names)
    spset = scalar_pset(names)
    r = random.Random(args.seed)
    shape = trees.GPConfig(init_min_depth=args.min_depth, init_max_depth=args.max_depth)
    population = [trees.random_tree(pset, r, shape) for _ in range(args.trees)]
    mean_size = sum(len(t) for t in population) / len(population)

    vec, n_vec = rate(lambda t: trees.compile_tree(t, pset)(X), population, args.seconds)
    row_np, n_np = rate(lambda t: trees.compile_tree_rows(t, pset)(X), population, args.seconds)
    row_math, n_math = rate(lambda t: per_row_math(t, spset, X, names), population, args.seconds)
    problem = fit.Problem.build(curves, 0.2, names)
    scored, n_scored = rate(lambda t: fit.score_tree(t, pset, problem), population, args.seconds)

    print(f"curves: {source}; trees: ramped half-and-half of depth {args.min_depth}-{args.max_depth}, mean size {mean_size:.1f} nodes")
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"vectorised (compile_tree, numpy closure):  {vec:10.0f} trees/s  ({n_vec} trees)")
    print(f"scored (genes + linear scaling + objective): {scored:8.0f} trees/s  ({n_scored} trees)")
    print(f"per-row DEAP gp.compile, math primitives:  {row_math:10.0f} trees/s  ({n_math} trees)")
    print(f"per-row DEAP gp.compile, numpy primitives: {row_np:10.0f} trees/s  ({n_np} trees)")
    print(f"speed-up over the faster per-row: {vec / max(row_math, row_np):.1f}x; "
          f"target >= 20000 trees/s: {'met' if vec >= 20000 else 'NOT met'}")
    if args.simplify:
        simplify_timings(trees[:args.simplify], args.simplify_timeout)


def simplify_timings(trees, timeout_s):
    """Wall time of closedform.simplify_bounded (to_sympy included) per tree."""
    import sympy

    from gpnas.predict import closedform
    times, fallbacks = [], 0
    for tree in trees:
        expr = closedform.to_sympy(tree)
        start = time.perf_counter()
        out = closedform.simplify_bounded(expr, timeout_s)
        times.append(time.perf_counter() - start)
        fallbacks += out is expr and sympy.count_ops(expr) > 0
    t = np.array(times) * 1000
    print(f"simplify_bounded on {len(t)} trees (bound {timeout_s} s): median {np.median(t):.0f} ms, "
          f"90th percentile {np.percentile(t, 90):.0f} ms, max {t.max():.0f} ms; "
          f"unsimplified form kept for {fallbacks} (timeout, failure or no gain)")


if __name__ == "__main__":
    main()
