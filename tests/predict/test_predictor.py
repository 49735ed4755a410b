import builtins
import json

import numpy as np
import pytest

from gpnas.errors import FileFormatError
from gpnas.predict.curves import Curve, group_by_task
from gpnas.predict.features import prefix_anchors, targets
from gpnas.predict.predictor import (
    BASELINES,
    CurvePredictor,
    Objective,
    PredictorConfig,
    fitness_error,
    predict_power_law,
    score_predictions,
    spearman,
    tree_finals,
)


def synthetic_curves(n_curves=120, n=40, seed=0, tasks=("a", "b", "c")):
    """Power-law curves c + a t^-alpha on different scales, with known finals and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1, dtype=float)
    curves = []
    for i in range(n_curves):
        scale = [0.7, 3.3, 10.0][i % 3]
        c, a, alpha = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.3, 1.5)
        v = scale * (c + a * t ** -alpha) * (1 + rng.normal(0, 0.002, n))
        curves.append(Curve(values=v, task=tasks[i % len(tasks)], config_id=str(i)))
    return curves


def test_fitness_error_is_capped_and_finite():
    assert fitness_error([0.0, 0.0, 0.0], [0.1, 1e6, -0.3], cap=1.0) == pytest.approx((0.1 + 1.0 + 0.3) / 3)
    assert fitness_error([0.0, 0.0], [0.05, 1e6]) == pytest.approx((0.05 + 0.1) / 2)  # default cap 0.1
    assert fitness_error([np.nan], [0.0]) == 0.1


def test_objective_rewards_ranking_and_charges_the_worst_task():
    curves = synthetic_curves(60)
    last, s = prefix_anchors(curves, 0.2)
    r = targets(curves, 0.2)
    plain = Objective(curves, 0.2)
    ranked = Objective(curves, 0.2, rank_weight=1.0, worst_weight=1.0, r_bound=1.0)
    assert plain(r) == 0.0 and ranked(r) == pytest.approx(0.0, abs=1e-12)  # the truth is perfect
    zero = np.zeros(len(curves))
    sp_last = np.mean([spearman(last[ix], [curves[i].final for i in ix])
                       for ix in group_by_task(curves).values()])
    assert ranked(zero) == pytest.approx(plain(zero) + 1 - sp_last)  # r = 0 is last value: no worst-task charge
    assert ranked(-r) > ranked(zero)  # reversing the corrections ranks worse


def test_tree_finals_and_constant_features_left_out():
    curves = synthetic_curves(60)
    model = CurvePredictor(population=20, generations=2, seed=0).fit(curves)
    assert "n_layer" not in model.features_ and "rel_last" in model.features_  # no config: constant
    np.testing.assert_allclose(tree_finals(model.tree(), model.pset, curves, 0.2), model.predict(curves))


def test_spearman_and_regret():
    curves = [Curve(values=np.array([1.0, f]), task="t") for f in [0.5, 0.3, 0.9]]
    s = score_predictions(np.array([0.2, 0.4, 0.1]), curves)
    assert s["per_task"]["t"]["regret"] == pytest.approx(0.9 - 0.3)  # ranks the worst curve first
    assert s["per_task"]["t"]["spearman"] == pytest.approx(-1.0)  # ranks [2, 3, 1] vs [2, 1, 3]
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0


def test_power_law_baseline_recovers_a_clean_power_law_and_falls_back():
    t = np.arange(1, 51, dtype=float)
    clean = Curve(values=0.5 + 2.0 * t ** -0.7)
    runaway = Curve(values=np.r_[1.0, 1.0, 1.0, 1.0, 1e18, np.full(45, 0.9)])
    pred = predict_power_law([clean, runaway], 0.2)
    assert pred[0] == pytest.approx(clean.final, rel=2e-3)
    assert pred[1] == 0.9  # the last prefix value, not an extrapolation thrown by the spike


def test_evolved_predictor_beats_a_constant_and_the_last_value():
    train, hold = synthetic_curves(seed=0), synthetic_curves(60, seed=1)
    model = CurvePredictor(population=60, generations=8, seed=0).fit(train, holdout=hold)
    finals = np.array([c.final for c in hold])
    err = np.abs(model.predict(hold) - finals)
    constant = np.abs(np.median([c.final for c in train]) - finals)
    last = np.abs(BASELINES["last"](hold, 0.2) - finals)
    assert np.mean(err) < 0.5 * np.mean(constant)
    assert np.mean(err) < np.mean(last)
    assert model.best_index_ > 0  # a correction was chosen over r = 0, the last value ...
    assert model.best_["holdout_error"] < model.equations_[0]["holdout_error"]  # ... and errs less on held-out curves
    assert len(model.history_) == 9 and model.history_[-1] <= model.history_[0]


def test_same_seed_same_result():
    curves = synthetic_curves(60)
    a = CurvePredictor(population=30, generations=4, seed=3).fit(curves)
    b = CurvePredictor(population=30, generations=4, seed=3).fit(curves)
    c = CurvePredictor(population=30, generations=4, seed=4).fit(curves)
    assert a.equations_ == b.equations_
    assert [r["tree"] for r in a.equations_] != [r["tree"] for r in c.equations_]
    assert a.history_ != c.history_


def test_json_round_trip(tmp_path):
    curves = synthetic_curves(60)
    model = CurvePredictor(population=30, generations=3, seed=0).fit(curves)
    path = model.save(tmp_path / "pred")
    assert path.name == "predictor.json" and path.with_suffix(".tex").exists()
    d = json.loads(path.read_text())
    assert d["tree"] == model.best_["tree"] and d["prefix"]["frac"] == 0.2 and "features" in d
    again = CurvePredictor.load(tmp_path / "pred")
    np.testing.assert_array_equal(again.predict(curves), model.predict(curves))
    assert [r["tree"] for r in again.equations_] == [r["tree"] for r in model.equations_]
    namespace = {}
    exec(compile(path.with_suffix(".py").read_text(), "predictor.py", "exec"), namespace)
    assert callable(namespace["predict_final"])


@pytest.mark.parametrize("tree", ["__import__('os').system('touch /tmp/pwned')",
                                  "add(rel_last, (lambda: 1)())", "rel_last.__class__"])
def test_predictor_file_with_code_is_refused_without_running_it(tmp_path, monkeypatch, tree):
    curves = synthetic_curves(30)
    model = CurvePredictor(population=10, generations=1, seed=0).fit(curves)
    path = model.save(tmp_path / "p.json")
    d = json.loads(path.read_text())
    d["tree"] = tree
    d["equations"][0]["tree"] = tree
    path.write_text(json.dumps(d))

    def tripwire(*args, **kwargs):
        raise AssertionError("code from the file was run")
    monkeypatch.setattr(builtins, "eval", tripwire)
    monkeypatch.setattr(builtins, "exec", tripwire)
    with pytest.raises(FileFormatError):
        CurvePredictor.load(path)


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.update(format="x"), "not a gpnas predictor"),
    (lambda d: d.update(features=["rel_last", "os.system"]), "features"),
    (lambda d: d["equations"].append({"tree": 3}), "tree"),
])
def test_malformed_predictor_files(tmp_path, mutate, problem):
    model = CurvePredictor(population=10, generations=1, seed=0).fit(synthetic_curves(30))
    path = model.save(tmp_path / "p.json")
    d = json.loads(path.read_text())
    mutate(d)
    path.write_text(json.dumps(d))
    with pytest.raises(FileFormatError, match=problem):
        CurvePredictor.load(path)
    path.write_text("{not json")
    with pytest.raises(FileFormatError, match="cannot read"):
        CurvePredictor.load(path)


def test_final_closed_form_and_python_export_equal_predict():
    import sympy

    from gpnas.predict.features import feature_matrix
    curves = synthetic_curves(60)
    model = CurvePredictor(population=40, generations=4, seed=0).fit(curves)
    expected = model.predict(curves)
    X = feature_matrix(curves, 0.2, model.features_)
    last, scale = prefix_anchors(curves, 0.2)
    columns = {**X, "last": last, "scale": scale}
    expr = model.sympy()
    assert {"last", "scale"} <= {s.name for s in expr.free_symbols}
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    f = sympy.lambdify(syms, expr, modules="numpy")
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(f(*[columns[s.name] for s in syms]), expected, rtol=1e-9)
    namespace = {}
    exec(compile(model.python(), "predictor.py", "exec"), namespace)  # our own generated code
    args = {n: columns[n] for n in namespace["predict_final"].__code__.co_varnames[
        :namespace["predict_final"].__code__.co_argcount]}
    np.testing.assert_allclose(namespace["predict_final"](**args), expected, rtol=1e-9)
    assert model.latex()


def test_config_round_trip():
    cfg = PredictorConfig(prefix_frac=0.3, population=11)
    assert PredictorConfig.from_dict(cfg.to_dict()) == cfg


def test_experiment_scripts_run_in_tiny_mode(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from gpnas.predict.curves import write_curves

    root = Path(__file__).resolve().parents[2]
    curves = tmp_path / "c.jsonl"
    write_curves(curves, synthetic_curves(45))
    bench = subprocess.run([sys.executable, str(root / "experiments/bench_predictors.py"), "--curves", str(curves),
                            "--n-curves", "30", "--trees", "10", "--seconds", "0.05"],
                           capture_output=True, text=True, check=True)
    assert "vectorised (compile_tree" in bench.stdout and "trees/s" in bench.stdout
    out = tmp_path / "loo"
    subprocess.run([sys.executable, str(root / "experiments/loo_taskset.py"), "--curves", str(curves),
                    "--seeds", "0", "--population", "10", "--generations", "1", "--out", str(out)],
                   capture_output=True, text=True, check=True)
    res = json.loads((out / "loo_taskset.json").read_text())
    assert len(res["folds"]) == 3 and set(res["mean"]) == {"evolved", "last", "best", "power_law"}
    assert (out / "loo_taskset.md").exists() and (out / "command.txt").exists() and (out / "machine.txt").exists()


def test_validation_tasks_choose_the_equation_and_last_value_is_a_candidate():
    curves = synthetic_curves(120, tasks=("a", "b", "c", "d", "e"))
    model = CurvePredictor(population=30, generations=3, seed=0).fit(curves)
    valid_tasks = {c.task for c in model.validation_curves_}
    assert len(valid_tasks) == 1  # whole tasks, 20 % of five
    assert len(model.validation_curves_) == sum(c.task in valid_tasks for c in model.train_curves_)
    assert model.equations_[0]["tree"] == "0.0"
    lowest = min(r["valid_fitness"] for r in model.equations_)
    assert model.best_["valid_fitness"] <= lowest + 1e-3


def test_predictor_side_never_imports_torch_or_the_trainer():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import gpnas.predict.predictor, gpnas.cli.predictors; "
            "bad = [m for m in sys.modules if m == 'torch' or m in "
            "('gpnas.train.trainer', 'gpnas.train.model', 'gpnas.train.data')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2],
                   capture_output=True)
