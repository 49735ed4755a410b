import random
import sys
import threading
import time

import numpy as np
import sympy

from gpnas.predict import closedform, trees
from gpnas.predict.features import FEATURE_NAMES


def _numeric(expr, X, n):
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    f = sympy.lambdify(syms, expr, modules="numpy")
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(f(*[X[s.name] for s in syms]), dtype=float), (n,))


def test_closed_form_equals_tree_on_many_random_trees():
    pset = trees.make_pset()
    rng = random.Random(7)
    data = np.random.default_rng(1)
    X = {name: data.normal(0, 2, 100) for name in FEATURE_NAMES}
    X["rel_best"][:3] = 0.0  # hits the protected branches
    for _ in range(150):
        tree = trees.random_tree(pset, rng, trees.GPConfig(init_max_depth=5))
        expr = closedform.to_sympy(tree)
        a = trees.compile_tree(tree, pset)(X)
        b = _numeric(expr, X, 100)
        inside = np.abs(a) < trees.OUTPUT_CLIP  # the tree clips there, the formula does not
        np.testing.assert_allclose(a[inside], b[inside], rtol=1e-9, atol=1e-9, err_msg=str(tree))


def test_symbols_are_the_feature_names_and_differentiable():
    pset = trees.make_pset(["log_lr", "n_layer", "dropout", "log_n_embd"])
    tree = trees.parse_tree("add(pdiv(log_lr, n_layer), mul(cexp(dropout), plog(log_n_embd)))", pset)
    expr = closedform.to_sympy(tree)
    assert {s.name for s in expr.free_symbols} == {"log_lr", "n_layer", "dropout", "log_n_embd"}
    d = expr.diff(closedform.symbol("log_lr"))
    value = d.subs({closedform.symbol("n_layer"): 4.0})
    assert float(value) == 0.25
    at = {closedform.symbol(n): v for n, v in
          [("log_lr", -7.0), ("n_layer", 4.0), ("dropout", 0.1), ("log_n_embd", 5.0)]}
    assert np.isfinite(float(expr.diff(closedform.symbol("log_n_embd")).subs(at)))


def test_simplify_falls_back_when_too_slow_python():
    calls = {"done": False}

    def slow(expr):  # pure Python work that would take minutes
        for _ in range(10 ** 9):
            sympy.Integer(3) + sympy.Integer(4)
        calls["done"] = True
        return sympy.Integer(0)

    x = closedform.symbol("rel_last")
    expr = x + x
    assert closedform.simplify_bounded(expr, timeout_s=0.2, simplify=slow) is expr
    assert not calls["done"]


def test_only_the_abort_of_a_simplify_is_kept_out_of_unraisable_reports(monkeypatch):
    from types import SimpleNamespace

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    x = closedform.symbol("rel_last")
    closedform.simplify_bounded(x + x, timeout_s=1.0)          # installs the filter once
    closedform.simplify_bounded(x + x, timeout_s=1.0)
    assert sys.unraisablehook.gpnas_quiet_aborts
    sys.unraisablehook(SimpleNamespace(exc_value=closedform._Abort()))
    sys.unraisablehook(SimpleNamespace(exc_value=ValueError("a real one")))
    assert [type(u.exc_value) for u in seen] == [ValueError]   # the others still reach the previous hook


def test_simplify_abandons_a_call_stuck_in_c():
    finished = threading.Event()

    def stuck(expr):
        time.sleep(5)  # one long C call: the tracer cannot interrupt it
        finished.set()
        return sympy.Integer(0)

    x = closedform.symbol("rel_last")
    assert closedform.simplify_bounded(x * 2, timeout_s=0.1, simplify=stuck) == x * 2
    assert not finished.is_set()


def test_simplify_result_used_when_quick():
    x = closedform.symbol("rel_last")
    # a bound far above the call's time: the test checks that a finished result is used, not the clock
    assert closedform.simplify_bounded(sympy.sin(x) ** 2 + sympy.cos(x) ** 2, timeout_s=120) == 1


def test_exports():
    pset = trees.make_pset()
    tree = trees.parse_tree("add(mul(slope_recent, log_horizon), pdiv(0.123456, rel_best))", pset)
    expr = closedform.to_sympy(tree)
    assert "0.123" in closedform.as_text(expr) and "0.123456" not in closedform.as_text(expr)
    assert "\\frac" in closedform.as_latex(expr)
    code = closedform.as_python(expr, "f", target="final")
    namespace = {}
    exec(compile(code, "<export>", "exec"), namespace)  # our own generated code
    X = {"slope_recent": np.array([-0.1, 0.2]), "log_horizon": np.array([1.5, 1.5]),
         "rel_best": np.array([-0.5, 0.0])}
    r = trees.compile_tree(tree, pset)({**X, **{n: np.zeros(2) for n in FEATURE_NAMES if n not in X}})
    got = namespace["f"](log_horizon=X["log_horizon"], rel_best=X["rel_best"],
                         slope_recent=X["slope_recent"], last=np.array([1.0, 2.0]), scale=np.array([2.0, 2.0]))
    np.testing.assert_allclose(got, np.array([1.0, 2.0]) + 2.0 * r)
