import builtins
import json

import numpy as np
import pytest

from gpnas.errors import ConfigError, DataError, FileFormatError
from gpnas.predict import fitness as fit
from gpnas.predict import trees
from gpnas.predict.baselines import predict_power_law, score_predictions, spearman
from gpnas.predict.curves import Curve
from gpnas.predict.features import available, feature_matrix, prefix_anchors
from gpnas.predict.predictor import CurvePredictor, PredictorConfig


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


def hyperparameter_curves(n_curves=60, seed=0, effect=1.0, n=30):
    """Curves whose prefixes look alike; where they end depends on config['width'] (and
    nothing in the prefix says so): only a predictor that reads the key can rank them."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1, dtype=float)
    curves = []
    for i in range(n_curves):
        width = float(rng.uniform(0, 1))
        depth = float(rng.uniform(0, 1))   # a key with no effect
        late = effect * 0.5 * width        # how far the curve still falls after the prefix
        v = 3.0 - 1.0 * (1 - np.exp(-t / 2)) - late * np.clip((t - 6) / (n - 6), 0, 1)
        v = v + rng.normal(0, 0.003, n)
        curves.append(Curve(values=v, task="t", config_id=str(i), config={"width": width, "depth": depth}))
    return curves


def test_linear_scaling_recovers_a_planted_affine_map_exactly():
    rng = np.random.default_rng(0)
    G = rng.normal(0, 0.3, size=(2, 50))
    y = 0.3 - 0.7 * G[0] + 0.2 * G[1]
    assert np.all(np.abs(y) < 1)  # inside the target's bound: nothing clipped
    s = fit.fit_scaling(G, y)
    np.testing.assert_allclose(s.coef, (0.3, -0.7, 0.2), atol=1e-4)
    # a tree scored on a problem is scaled the same way: r = a + b * tree
    curves = synthetic_curves(30)
    pset = trees.make_pset(["rel_last"])
    problem = fit.Problem.build(curves, 0.2, ["rel_last"])
    problem.y = 0.05 + 0.4 * problem.columns["rel_last"]          # plant the target
    _, scaling, _ = fit.score_tree(trees.parse_tree("mul(rel_last, 3.0)", pset), pset, problem)
    np.testing.assert_allclose(scaling.coef, (0.05, 0.4 / 3.0), atol=1e-6)


def test_genes_split_at_the_root_and_constant_tree_is_the_fitted_offset():
    pset = trees.make_pset(["rel_last", "slope_all", "noise"])
    tree = trees.parse_tree("add(rel_last, sub(mul(slope_all, noise), 2.0))", pset)
    assert [str(g) for g in fit.genes(tree)] == ["rel_last", "mul(slope_all, noise)", "2.0"]
    G = np.ones((1, 10))
    assert fit.fit_scaling(G, np.full(10, 0.25)).coef == pytest.approx((0.25, 0.0))


def test_objective_parts_match_a_direct_computation():
    curves = synthetic_curves(45)
    problem = fit.Problem.build(curves, 0.2, ["rel_last"])
    pred = np.random.default_rng(1).normal(size=problem.m)
    parts = fit.objective_parts(pred, problem)
    rho = [spearman(pred[ix], problem.finals[ix]) for ix in problem.groups]
    assert parts["spearman"] == pytest.approx(np.mean(rho))
    perfect = fit.objective_parts(problem.finals, problem)
    assert perfect == {"error": 0.0, "spearman": pytest.approx(1.0), "regret": 0.0}


def test_cross_validation_falls_back_to_the_last_value_on_planted_noise():
    rng = np.random.default_rng(3)
    curves = []
    for i in range(40):  # the prefix says nothing about the end: the finals are noise
        v = np.r_[np.linspace(3.0, 2.0, 10) + rng.normal(0, 0.05, 10), np.full(30, 1.5)]
        v[-1] = 1.5 + rng.normal(0, 0.3)
        curves.append(Curve(values=v, task="t", config_id=str(i)))
    model = CurvePredictor(population=60, generations=8, seed=0, prefix_frac=0.25).fit(curves)
    assert model.best_.kind in ("last", "last+offset")
    assert not model.beats_last_
    assert "no evolved formula ranked better than the last value" in model.describe_choice()
    np.testing.assert_array_equal(np.argsort(model.predict(curves)), np.argsort(prefix_anchors(curves, 0.25)[0]))


def test_a_planted_hyperparameter_effect_is_found():
    train, test = hyperparameter_curves(60, seed=0), hyperparameter_curves(80, seed=1)
    model = CurvePredictor(population=80, generations=10, seed=0, prefix_frac=0.2).fit(train)
    assert any(n.endswith("width") for n in model.features_) and any(n.endswith("depth") for n in model.features_)
    assert model.best_.kind in ("tree", "linear") and model.beats_last_
    found = [c for c in model.equations_ if c.kind == "tree" and "width" in c.tree]
    last = next(c for c in model.equations_ if c.kind == "last")
    assert max(c.cv["spearman"] for c in found) > last.cv["spearman"] + 0.3   # the GP found the key
    finals = np.array([c.final for c in test])
    last = prefix_anchors(test, 0.2)[0]
    assert spearman(model.predict(test), finals) > spearman(last, finals) + 0.3


def test_the_linear_model_is_cross_validated_honestly_and_chosen_for_an_additive_effect(tmp_path):
    """Two keys add up to where a curve ends: no one-feature tree can say so, the linear
    model over every feature can; it is refitted without each fold like any candidate."""
    def additive(n_curves, seed):
        out = []
        for c in hyperparameter_curves(n_curves, seed=seed, effect=0.0):
            w, d = c.config["width"], c.config["depth"]
            v = c.values - 0.5 * (w + d) * np.clip((np.arange(1, 31) - 6) / 24, 0, 1)
            out.append(Curve(values=v, task=c.task, config_id=c.config_id, config=c.config))
        return out
    train, test = additive(60, 0), additive(80, 1)
    n_seeds = len(available(train, 0.2).names) + 1          # the constant and one tree per feature
    model = CurvePredictor(population=n_seeds, generations=0, seed=0, prefix_frac=0.2).fit(train)
    linear = next(c for c in model.equations_ if c.kind == "linear")
    last = next(c for c in model.equations_ if c.kind == "last")
    assert linear.complexity == 2 * len(model.features_) - 1
    assert linear.cv["spearman"] > last.cv["spearman"] + 0.3
    assert model.best_.kind == "linear" and model.beats_last_
    assert "the linear model" in model.describe_choice()
    assert linear.cv["error_z"] > model.config.linear_margin and linear.cv["rank_z"] >= 0
    assert "squared error" in model.describe_choice()
    strict = CurvePredictor(population=n_seeds, generations=0, seed=0, prefix_frac=0.2, linear_margin=1e6).fit(train)
    assert strict.best_.kind != "linear"
    finals = np.array([c.final for c in test])
    assert spearman(model.predict(test), finals) > spearman(prefix_anchors(test, 0.2)[0], finals) + 0.3
    again = CurvePredictor.load(model.save(tmp_path))
    np.testing.assert_array_equal(again.predict(test), model.predict(test))
    assert "width" in model.best_.formula and "depth" in model.best_.formula


def test_rank_gain_is_measured_in_bootstrap_standard_errors():
    curves = hyperparameter_curves(60, seed=0)
    problem = fit.Problem.build(curves, 0.2, ["rel_last"])
    rng = np.random.default_rng(0)
    assert fit.rank_gain_z(problem.finals, problem) > 5                      # the truth ranks far better
    assert fit.rank_gain_z(problem.last, problem) == -np.inf                  # the same order gains nothing
    ranked = fit.Problem.build(synthetic_curves(60), 0.2, ["rel_last"])         # the last value ranks well here
    assert fit.rank_gain_z(rng.normal(0, 1, ranked.m), ranked) < -2             # noise ranks worse
    G = fit.linear_matrix(problem.columns, ["rel_last"])
    loo = fit.loo_finals(G, problem)
    alone = fit.fit_scaling(G[:, 1:], problem.y[1:])   # the first curve's prediction never saw it
    assert loo[0] == pytest.approx(problem.last[0] + problem.scale[0] * alone.apply(G[:, :1])[0])


def test_error_gain_is_a_paired_squared_error_reduction_in_standard_errors():
    problem = fit.Problem.build(hyperparameter_curves(60, seed=0), 0.2, ["rel_last"])
    offset = fit.loo_finals(np.zeros((0, problem.m)), problem)
    assert fit.error_gain_z(problem.finals, offset, problem) > 5                # the truth comes far closer
    assert fit.error_gain_z(offset, offset, problem) == -np.inf                 # the same predictions gain nothing
    noise = problem.last + problem.scale * np.random.default_rng(0).uniform(-1, 1, problem.m)
    assert fit.error_gain_z(noise, offset, problem) < -2                        # noise comes farther off
    d = ((offset - problem.last) / problem.scale - problem.y) ** 2 - ((problem.finals - problem.last) / problem.scale
                                                                       - problem.y) ** 2
    assert fit.error_gain_z(problem.finals, offset, problem) == pytest.approx(
        d.mean() / (d.std(ddof=1) / np.sqrt(len(d))))


def test_the_linear_model_needs_both_gains():
    from gpnas.predict.predictor import linear_passes
    assert linear_passes({"error_z": 2.5, "rank_z": 0.1}, 2)
    assert not linear_passes({"error_z": 2.5, "rank_z": -0.1}, 2)    # closer, but ranks worse than the last value
    assert not linear_passes({"error_z": 1.5, "rank_z": 3.0}, 2)     # ranks better, but the error gain is not sure
    assert not linear_passes({}, 0)


def test_the_rank_margin_decides_how_sure_the_choice_must_be(tmp_path):
    train = hyperparameter_curves(60, seed=0)
    cautious = CurvePredictor(population=80, generations=10, seed=0, prefix_frac=0.2, rank_margin=1e6).fit(train)
    assert cautious.best_.kind != "tree"   # the linear model has its own (honest) test
    assert CurvePredictor.load(cautious.save(tmp_path)).config.rank_margin == 1e6
    with pytest.raises(ConfigError, match="rank margin -1"):
        CurvePredictor(rank_margin=-1)
    with pytest.raises(ConfigError, match="linear margin -1"):
        CurvePredictor(linear_margin=-1)


def test_a_predictor_refuses_curves_that_lack_a_key_it_reads():
    model = CurvePredictor(population=30, generations=3, seed=0).fit(hyperparameter_curves(40))
    stripped = [Curve(values=c.values, task=c.task, config_id=c.config_id, config={"depth": 0.5})
                for c in hyperparameter_curves(10, seed=2)]
    with pytest.raises(DataError, match="no config key 'width'"):
        model.predict(stripped)


def test_too_few_curves_and_a_lone_task_are_one_line():
    with pytest.raises(DataError, match="needs at least 8"):
        CurvePredictor().fit(synthetic_curves(5))
    lone = synthetic_curves(20, tasks=("a",)) + [Curve(values=np.linspace(2, 1, 40), task="b")]
    with pytest.raises(DataError, match="task 'b' has 1 curve"):
        CurvePredictor().fit(lone)


def test_keys_missing_from_some_curves_are_left_out_and_listed():
    curves = hyperparameter_curves(30)
    curves[0] = Curve(values=curves[0].values, task="t", config_id="0", config={"width": 0.5})
    model = CurvePredictor(population=20, generations=2, seed=0).fit(curves)
    assert model.left_out_ == ("depth",) and "depth" not in model.features_


def test_predictions_stay_in_a_plausible_range_for_a_blown_up_curve():
    train = synthetic_curves(60)
    model = CurvePredictor(population=40, generations=4, seed=0).fit(train)
    blown = Curve(values=np.r_[1.0, 5.0, 1e9, 1e18, np.full(36, 1e18)], task="a", config_id="x")
    pred = model.predict([*train[:10], blown])
    last, scale = prefix_anchors([*train[:10], blown], 0.2)
    assert np.all(np.isfinite(pred)) and np.all(np.abs(pred - last) <= scale + 1e-9)


def test_spearman_regret_and_na_for_fewer_than_five():
    curves = [Curve(values=np.array([1.0, f]), task="t") for f in [0.5, 0.3, 0.9, 0.4, 0.8]]
    s = score_predictions(np.array([0.2, 0.4, 0.1, 0.3, 0.5]), curves)
    assert s["per_task"]["t"]["regret"] == pytest.approx(0.9 - 0.3)  # ranks the worst curve first
    assert s["per_task"]["t"]["spearman"] == pytest.approx(spearman([0.2, 0.4, 0.1, 0.3, 0.5],
                                                                     [0.5, 0.3, 0.9, 0.4, 0.8]))
    few = score_predictions(np.array([0.2, 0.4, 0.1]), curves[:3])
    assert np.isnan(few["mean"]["spearman"]) and np.isnan(few["mean"]["regret"])
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0


def test_power_law_baseline_recovers_a_clean_power_law_and_falls_back():
    t = np.arange(1, 51, dtype=float)
    clean = Curve(values=0.5 + 2.0 * t ** -0.7)
    runaway = Curve(values=np.r_[1.0, 1.0, 1.0, 1.0, 1e18, np.full(45, 0.9)])
    pred = predict_power_law([clean, runaway], 0.2)
    assert pred[0] == pytest.approx(clean.final, rel=2e-3)
    assert pred[1] == 0.9  # the last prefix value, not an extrapolation thrown by the spike


def test_evolution_improves_the_training_objective():
    model = CurvePredictor(population=40, generations=6, seed=0).fit(synthetic_curves(60))
    assert len(model.history_) == 7 and model.history_[-1] < model.history_[0]


def test_same_seed_same_result_and_different_seeds_differ():
    curves = synthetic_curves(60)
    a = CurvePredictor(population=30, generations=4, seed=3).fit(curves)
    b = CurvePredictor(population=30, generations=4, seed=3).fit(curves)
    c = CurvePredictor(population=30, generations=4, seed=4).fit(curves)
    assert a.to_dict() == b.to_dict()
    assert a.history_ != c.history_


def test_json_round_trip(tmp_path):
    curves = hyperparameter_curves(40)
    model = CurvePredictor(population=30, generations=3, seed=0).fit(curves)
    path = model.save(tmp_path / "pred")
    assert path.name == "predictor.json" and path.with_suffix(".tex").exists()
    d = json.loads(path.read_text())
    assert d["prefix"]["frac"] == 0.2 and d["features"] == list(model.features_)
    again = CurvePredictor.load(tmp_path / "pred")
    np.testing.assert_array_equal(again.predict(curves), model.predict(curves))
    assert [c.tree for c in again.equations_] == [c.tree for c in model.equations_]
    namespace = {}
    exec(compile(path.with_suffix(".py").read_text(), "predictor.py", "exec"), namespace)  # our own export
    assert callable(namespace["predict_final"])


@pytest.mark.parametrize("tree", ["__import__('os').system('touch /tmp/pwned')",
                                  "add(rel_last, (lambda: 1)())", "rel_last.__class__"])
def test_predictor_file_with_code_is_refused_without_running_it(tmp_path, monkeypatch, tree):
    model = CurvePredictor(population=10, generations=1, seed=0).fit(synthetic_curves(30))
    path = model.save(tmp_path / "p.json")
    d = json.loads(path.read_text())
    d["equations"][-1].update(kind="tree", tree=tree)
    path.write_text(json.dumps(d))

    def tripwire(*args, **kwargs):
        raise AssertionError("code from the file was run")
    monkeypatch.setattr(builtins, "eval", tripwire)
    monkeypatch.setattr(builtins, "exec", tripwire)
    with pytest.raises(FileFormatError):
        CurvePredictor.load(path)


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.update(format="x"), "not a gpnas predictor"),
    (lambda d: d.update(features=["rel_last", "os.system"]), "feature names"),
    (lambda d: d["equations"].append({"kind": "tree", "tree": 3}), "tree string"),
    (lambda d: d.update(best_index=99), "not one of the"),
    (lambda d: next(e for e in d["equations"] if e["kind"] == "linear")["scaling"]["coef"].pop(),
     "one coefficient per feature"),
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

    curves = hyperparameter_curves(40)
    model = CurvePredictor(population=40, generations=4, seed=0).fit(curves)
    for i, c in enumerate(model.equations_):
        if c.kind not in ("tree", "linear", "last+offset"):
            continue
        expected = model.predict(curves, i=i)
        last, scale = prefix_anchors(curves, 0.2)
        columns = {**feature_matrix(curves, 0.2, model.features_, model.config_keys_), "last": last, "scale": scale}
        expr = model.sympy(i)
        syms = sorted(expr.free_symbols, key=lambda s: s.name)
        f = sympy.lambdify(syms, expr, modules="numpy")
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(f(*[columns[s.name] for s in syms]), expected, rtol=1e-9)
        namespace = {}
        exec(compile(model.python(i), "predictor.py", "exec"), namespace)  # our own generated code
        code = namespace["predict_final"].__code__
        args = {n: columns[n] for n in code.co_varnames[:code.co_argcount]}
        np.testing.assert_allclose(namespace["predict_final"](**args), expected, rtol=1e-9)
        assert model.latex(i)


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
    assert "trees/s" in bench.stdout
    table = subprocess.run([sys.executable, str(root / "experiments/insearch.py"), "--curves", str(curves),
                            "--archive", "10", "--reps", "1", "--prefix", "0.2", "--generations", "1",
                            "--population", "10", "--methods", "last,power_law,gpnas,gpnas_linear",
                            "--json", str(tmp_path / "t.json")], capture_output=True, text=True, check=True)
    assert "| gpnas |" in table.stdout and "| last |" in table.stdout and "| gpnas_linear |" in table.stdout
    assert set(json.loads((tmp_path / "t.json").read_text())["table"]) == {"last", "power_law", "gpnas", "gpnas_linear"}


def test_predictor_side_never_imports_torch_or_the_trainer():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import gpnas.predict.predictor, gpnas.cli.predictors; "
            "bad = [m for m in sys.modules if m == 'torch' or m in "
            "('gpnas.train.trainer', 'gpnas.train.model', 'gpnas.train.data')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2],
                   capture_output=True)


def test_a_choice_among_trees_scored_on_the_same_curves_skips_scoring_and_is_the_same(monkeypatch):
    import copy
    import random

    from gpnas.predict import evolution as evo
    from gpnas.predict.predictor import seed_trees

    curves = hyperparameter_curves(40)
    found = available(curves, 0.2)
    pset = trees.make_pset(found.names)
    rng = random.Random(0)
    population = seed_trees(pset) + [trees.random_tree(pset, rng, trees.GPConfig(max_size=15, max_depth=4))
                                     for _ in range(20)]
    evo.score(population, pset, fit.Problem.build(curves, 0.2, found.names, found.config_keys))
    fresh = CurvePredictor.from_trees(copy.deepcopy(population), curves, 0.2, found.names, found.config_keys)

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again")
    monkeypatch.setattr(evo, "score", no_scoring)
    reused = CurvePredictor.from_trees(copy.deepcopy(population), curves, 0.2, found.names, found.config_keys,
                                       scored=True)
    assert reused.best_index_ == fresh.best_index_
    assert [c.tree for c in reused.equations_] == [c.tree for c in fresh.equations_]
    np.testing.assert_array_equal(reused.predict(curves), fresh.predict(curves))


def test_formulas_read_as_people_read_them():
    """The clip is stated once as the plausible range, not inside each formula; the linear
    model shows its largest terms and counts the rest; every name used is explained."""
    import re

    from gpnas.predict import closedform
    from gpnas.predict.features import FEATURES

    curves = hyperparameter_curves(60)
    model = CurvePredictor(population=40, generations=3, seed=0).fit(curves)
    lo, hi = model.plausible_range_
    assert lo < hi
    texts = [model.formula_text(i) for i in range(len(model.equations_))]
    for c, text in zip(model.equations_, texts):
        assert "scale*Min(" not in text and "Max(" not in text    # no clip wrapped around a formula
        if c.kind in ("tree", "linear", "last+offset"):
            assert text.startswith("last + scale*(") and model.formula_latex(model.equations_.index(c))
    linear = next(t for c, t in zip(model.equations_, texts) if c.kind == "linear")
    n_terms = sum(1 for b in next(c for c in model.equations_ if c.kind == "linear").scaling.coef[1:] if b != 0)
    assert len(re.findall(r"\*[a-z_0-9]+", linear)) == min(5, n_terms)
    assert n_terms <= 5 or f"({n_terms - 5} smaller terms" in linear
    names = dict(closedform.glossary(texts, {n: f.formula for n, f in FEATURES.items()}, model.config_keys_))
    assert "scale" in names and "last" in names and names["log10_width"] == "log10 of the config's width"
    assert all(name in names for text in texts for name in re.findall(r"[a-z_]+[a-z0-9_]*", text)
               if name in FEATURES or name in model.config_keys_)


def test_a_prior_formula_is_judged_with_its_own_margin_and_saved_as_a_prior(tmp_path):
    curves = hyperparameter_curves(60)
    found = available(curves, 0.2)
    pset = trees.make_pset(found.names)
    prior = "add(log10_width, rel_last)"
    population = [trees.parse_tree(prior, pset), trees.parse_tree("rel_last", pset)]

    def chosen(margin):
        model = CurvePredictor.from_trees(population, curves, 0.2, found.names, found.config_keys,
                                          formulas=False, prior=[prior], prior_margin=margin)
        return model, model.best_

    model, best = chosen(0.0)
    assert best.kind == "tree" and best.prior and best.tree == prior
    assert model.describe_choice().startswith("chosen: a formula of the prior")
    assert CurvePredictor.load(model.save(tmp_path / "p")).best_.prior
    _, best = chosen(1e9)
    assert not (best.kind == "tree" and best.prior)


def test_an_evolved_formula_is_chosen_only_if_it_holds_on_curves_it_never_saw(tmp_path):
    """Validation curves (the run's held-out quarter): an evolved formula that ranks them worse
    than the last value, or with too few of them to rank, is not chosen; a prior's is judged by
    its cross-validation alone (its structure never saw the run's curves)."""
    curves = hyperparameter_curves(60)
    found = available(curves, 0.2)
    pset = trees.make_pset(found.names)
    formula = "add(log10_width, rel_last)"
    population = [trees.parse_tree(formula, pset), trees.parse_tree("rel_last", pset)]

    def chosen(validation, prior=()):
        model = CurvePredictor.from_trees(population, curves, 0.2, found.names, found.config_keys,
                                          formulas=False, prior=prior, validation=validation, rank_margin=0.0,
                                          linear_margin=1e9)   # the linear model out of the way
        return model, model.best_

    model, best = chosen(hyperparameter_curves(20, seed=1))           # the same law: it holds
    assert best.kind == "tree" and best.tree == formula
    assert best.validation["curves"] == 20 and best.validation["spearman"] > 0.5
    assert "on the 20 held-out curves" in model.describe_choice()
    assert CurvePredictor.load(model.save(tmp_path / "p")).best_.validation["curves"] == 20
    model, best = chosen(hyperparameter_curves(20, seed=1, effect=-1.0))   # the law reversed: it fails there
    assert best.kind != "tree" and model.held_back_ >= 1
    assert "ranked the held-out curves worse than the last value" in model.describe_choice()
    _, best = chosen(hyperparameter_curves(20, seed=1)[:4])              # too few to rank: not yet
    assert best.kind != "tree"
    _, best = chosen(hyperparameter_curves(20, seed=1, effect=-1.0), prior=[formula])
    assert best.kind == "tree" and best.prior                           # a prior's formula is judged by its cv
    _, best = chosen([])                                                # none held out yet: not yet
    assert best.kind != "tree"
    _, best = chosen(None)                                              # no validation asked for: no such test
    assert best.kind == "tree"
