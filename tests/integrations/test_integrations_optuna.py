"""gpnas.integrations.optuna on real SQLite-backed Optuna studies (no mocks)."""

import math

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from gpnas.errors import ConfigError, GpnasError  # noqa: E402
from gpnas.integrations.optuna import PredictorPruner, open_study, study_curves  # noqa: E402
from gpnas.predict.curves import Curve  # noqa: E402
from gpnas.predict.predictor import CurvePredictor, PredictorConfig  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
STEPS = list(range(0, 101, 10))  # 11 evaluations
DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "kind": CategoricalDistribution(["a", "b"])}


def decay(final, rate, start=4.0):
    """A loss curve from start towards final: start at step 0, close to final at step 100."""
    return [final + (start - final) * math.exp(-i / rate) for i in range(len(STEPS))]


def completed(final, rate=4.0, lr=0.01, maximize=False):
    values = decay(final, rate)
    if maximize:  # an accuracy curve: 1 - loss/4
        values = [1.0 - v / 4.0 for v in values]
    return create_trial(state=TrialState.COMPLETE, value=values[-1], params={"lr": lr, "kind": "a"},
                        distributions=DISTRIBUTIONS, intermediate_values=dict(zip(STEPS, values)))


@pytest.fixture(scope="module")
def shared_storage(tmp_path_factory):
    """One SQLite file for the module: creating Optuna's schema takes seconds, a study in it does not."""
    return f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'studies.db'}"


@pytest.fixture
def storage(shared_storage):
    return shared_storage


def new_study(storage, **kwargs):
    return optuna.create_study(storage=storage, study_name=f"s{next(NAMES)}", **kwargs)


NAMES = iter(range(10**6))


def planted_study(storage, pruner, finals=(2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9), maximize=False):
    study = new_study(storage, pruner=pruner, direction="maximize" if maximize else "minimize")
    for i, final in enumerate(finals):
        study.add_trial(completed(final, rate=3.0 + i % 3, lr=10 ** (-3 + i % 4 * 0.5), maximize=maximize))
    return study


def run_curve(study, values, lr=0.01):
    """Report ``values`` one by one as a new trial does; the index at which it was pruned, or None."""
    trial = study.ask({"lr": DISTRIBUTIONS["lr"], "kind": DISTRIBUTIONS["kind"]})
    for i, v in enumerate(values):
        trial.report(v, STEPS[i])
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return i
    study.tell(trial, values[-1])
    return None


def test_last_value_pruner_prunes_a_planted_bad_curve_at_its_prefix_and_keeps_a_good_one(storage):
    pruner = PredictorPruner("last", n_startup_trials=5)
    study = planted_study(storage, pruner)
    bad = decay(3.6, 3.0)          # stuck far above every completed trial's final
    assert run_curve(study, bad) == 3  # the 4th value: k = max(4, ceil(0.1 * 11)); never before
    d = pruner.last_decision
    finals = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert d.pruned and d.predicted == pytest.approx(bad[3]) and d.threshold == pytest.approx(np.median(finals))
    assert d.margin > 0  # the last value's error at 4 values on the completed trials
    assert run_curve(study, decay(1.8, 3.0)) is None  # better than all: kept to the end
    assert pruner.last_decision.reason == "at its last evaluation"


def test_refitted_predictor_is_fitted_on_two_thirds_of_the_completed_trials_and_prunes_the_bad(storage):
    config = PredictorConfig(prefix_frac=0.1, population=40, generations=3, seed=0)
    pruner = PredictorPruner(n_startup_trials=5, min_fit_trials=12, refit_every=5, predictor_config=config)
    study = planted_study(storage, pruner, finals=[2.0 + 0.05 * i for i in range(15)])
    assert run_curve(study, decay(3.7, 3.0)) == 3
    assert pruner.fits == 1 and isinstance(pruner.model, CurvePredictor)
    assert len(pruner.fitted_on) == 10  # every third completed trial judges the margin instead
    assert pruner.last_decision.margin >= 0 and math.isfinite(pruner.last_decision.predicted)
    assert run_curve(study, decay(1.7, 3.0)) is None
    # 16 completed now (the good one included): one more is not yet `refit_every` later
    run_curve(study, decay(3.7, 3.0))
    assert pruner.fits == 1


def test_refit_waits_for_min_fit_trials_and_uses_the_last_value_until_then(storage):
    pruner = PredictorPruner(n_startup_trials=5, min_fit_trials=20)
    study = planted_study(storage, pruner)
    assert run_curve(study, decay(3.6, 3.0)) == 3
    assert pruner.model is None and pruner.fits == 0
    assert pruner.last_decision.predicted == pytest.approx(decay(3.6, 3.0)[3])


def test_a_saved_predictor_json_is_used_with_its_own_prefix(storage, tmp_path):
    rng = np.random.default_rng(0)
    curves = [Curve(values=np.array(decay(f, r)), task="t", config_id=str(i))
              for i, (f, r) in enumerate(zip(rng.uniform(1.5, 3, 20), rng.uniform(2, 6, 20)))]
    path = CurvePredictor(PredictorConfig(prefix_frac=0.5, population=30, generations=2)).fit(curves).save(
        tmp_path / "pred")
    pruner = PredictorPruner(path, n_startup_trials=5)
    study = planted_study(storage, pruner)
    pruned_at = run_curve(study, decay(3.8, 3.0))
    assert pruned_at == 5  # k = ceil(0.5 * 11) = 6 values: the loaded predictor's prefix
    assert run_curve(study, decay(1.6, 3.0)) is None


def test_startup_trials_and_warmup_steps_hold_pruning_back(storage):
    assert run_curve(planted_study(storage, PredictorPruner("last", n_startup_trials=11)), decay(3.6, 3)) is None
    late = PredictorPruner("last", n_startup_trials=5, n_warmup_steps=60)
    study = new_study(storage, pruner=late)
    for i in range(10):
        study.add_trial(completed(2.0 + 0.1 * i))
    assert run_curve(study, decay(3.6, 3)) == 6  # step 60 is the first step judged


def test_a_maximised_study_prunes_a_low_accuracy_curve(storage):
    pruner = PredictorPruner("last", n_startup_trials=5)
    study = planted_study(storage, pruner, maximize=True)
    low = [1.0 - v / 4.0 for v in decay(3.6, 3.0)]  # accuracy stuck near 0.1
    high = [1.0 - v / 4.0 for v in decay(1.8, 3.0)]
    assert run_curve(study, low) == 3
    assert run_curve(study, high) is None


def test_a_non_finite_report_is_pruned(storage):
    study = planted_study(storage, PredictorPruner("last", n_startup_trials=5))
    assert run_curve(study, [4.0, 3.9, float("nan"), 3.0]) == 2


@pytest.mark.parametrize("kwargs", [{"quantile": 1.5}, {"error_quantile": -0.1}, {"refit_every": 0},
                                    {"n_evaluations": 1}, {"prefix_frac": 0.0}])
def test_bad_pruner_settings_are_refused(kwargs):
    with pytest.raises((ConfigError, ValueError)):
        PredictorPruner(**kwargs)


def test_study_curves_keep_finished_trials_in_step_order_and_count_the_rest(storage):
    study = new_study(storage, direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, params={"lr": 0.01, "kind": "b"},
                                 distributions=DISTRIBUTIONS, intermediate_values={20: 0.8, 0: 0.1, 10: 0.5}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.02, "kind": "a"},
                                 distributions=DISTRIBUTIONS, intermediate_values={0: 0.1}))
    study.add_trial(create_trial(state=TrialState.FAIL))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5))  # nothing reported
    lines, counts = study_curves(open_study(storage, study.study_name))
    assert len(lines) == 1 and (counts.pruned, counts.failed, counts.no_reports) == (1, 1, 1)
    d = lines[0]
    assert d["x"] == [0, 10, 20] and d["values"] == [0.1, 0.5, 0.8]
    assert d["higher_is_better"] is True and d["config"] == {"lr": 0.01}  # the categorical is left out
    assert d["task"] == study.study_name and d["config_id"] == "0"


def test_open_study_refuses_a_multi_objective_study_and_a_missing_name(storage):
    two = new_study(storage, directions=["minimize", "maximize"])
    with pytest.raises(GpnasError, match="2 objectives"):
        open_study(storage, two.study_name)
    with pytest.raises(GpnasError, match=f"no study named 'three'.*studies there: .*{two.study_name}"):
        open_study(storage, "three")


def test_the_pruner_benchmark_runs_in_a_tiny_mode(tmp_path, tiny_corpus_dir):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    try:
        import bench_pruners
    finally:
        sys.path.pop(0)
    report = bench_pruners.main(["--preset", "micro", "--trials", "7", "--seeds", "0", "--data-dir",
                                 str(tiny_corpus_dir), "--out", str(tmp_path / "out"),
                                 "--pruners", "NopPruner", "MedianPruner", "PredictorPruner"])
    rows = {r["pruner"]: r for r in report["rows"]}
    assert list(rows) == ["NopPruner", "MedianPruner", "PredictorPruner"]
    nop = report["per_seed"]["0"]["NopPruner"]
    assert nop["steps"] == 7 * 24 and nop["completed"] == 7 and rows["NopPruner"]["steps_vs_nop"] == 1.0
    for name in ("MedianPruner", "PredictorPruner"):  # pruning only ever saves steps
        run = report["per_seed"]["0"][name]
        assert run["steps"] <= nop["steps"] and run["completed"] + run["pruned"] == 7
        assert run["best_final"] >= nop["best_final"]  # the same 7 configurations, some cut short
    assert report["trainings"] == 7 and report["replay_equals_retraining"] is True
    assert json.loads((tmp_path / "out" / "pruners.json").read_text())["rows"] == report["rows"]
