import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpnas.errors import DataError
from gpnas.predict.baselines import BASELINES
from gpnas.predict.curves import Curve
from gpnas.predict.features import (
    CURVE_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    available,
    feature_matrix,
    prefix_anchors,
    targets,
    to_final,
)

hostile_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0.0, 1e18, -1e18, 6.3e18, 0.6931, 1e-300]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(hostile_values, min_size=1, max_size=30), min_size=1, max_size=6),
       st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_every_feature_finite_on_hostile_curves(curves_values, frac):
    curves = [Curve(values=np.array(v), task=f"t{i % 2}", horizon=len(v) + i, x=np.arange(len(v)) * 10.0,
                    train_values=np.array(v[::-1]), config={"max_iters": 300, "warmup_iters": 20, "lr": 10.0 ** -i})
              for i, v in enumerate(curves_values)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning inside fails the test
        X = feature_matrix(curves, frac, [*FEATURE_NAMES, "log10_lr"])
    assert set(X) == {*FEATURE_NAMES, "log10_lr"}
    for name, col in X.items():
        assert col.shape == (len(curves),) and np.all(np.isfinite(col)), name
    last, s = prefix_anchors(curves, frac)
    r = targets(curves, frac)
    baselines = [f(curves, frac) for f in BASELINES.values()]
    assert np.all(np.isfinite(last)) and np.all(s > 0) and np.all(np.isfinite(r))
    for pred in baselines:
        assert pred.shape == (len(curves),) and np.all(np.isfinite(pred))


def test_every_feature_is_documented_with_its_formula():
    for name, f in FEATURES.items():
        assert f.formula.startswith(f"{name} = "), name


def test_scale_free_features_ignore_the_curve_scale():
    v = np.array([2.0, 1.5, 1.2, 1.1, 1.05, 1.0, 0.98, 0.97, 0.96, 0.95])
    a = feature_matrix([Curve(values=v, task="a")], 0.5)
    b = feature_matrix([Curve(values=v * 100.0, task="b")], 0.5)
    for name in ("rel_last", "rel_best", "slope_all", "slope_recent", "curvature", "noise", "gap_best"):
        assert np.isclose(a[name][0], b[name][0]), name
    assert np.isclose(a["rel_last"][0], (1.05 - 2.0) / 2.0)  # k = 5 of 10


def test_blow_up_flat_spike_and_short_curves():
    curves = [Curve(values=np.array([0.7, 0.7, 1e18, 6e18, 1e18]), task="t"),
              Curve(values=np.full(10, 0.693), task="t"),
              Curve(values=np.array([1.0, 0.9, 50.0, 0.8, 0.7]), task="t"),
              Curve(values=np.array([1.0]), task="t"),
              Curve(values=np.array([1.0, np.nan, 0.5]), task="t")]
    X = feature_matrix(curves, 0.2)
    assert all(np.all(np.isfinite(c)) for c in X.values())
    assert X["rel_last"][0] == 1e3              # blow-up clipped
    assert X["rel_last"][1] == 0 and X["noise"][1] == 0
    assert X["slope_all"][3] == 0               # one point: no slope


def test_cohort_features_rank_within_each_task():
    curves = [Curve(values=np.array([1.0, 0.9, 0.8, v]), task=t)
              for v, t in [(0.5, "a"), (0.7, "a"), (0.6, "a"), (9.0, "b")]]
    X = feature_matrix(curves, 1.0, ["cohort_rank_last", "cohort_rank_best"])
    assert np.allclose(X["cohort_rank_last"], [0.0, 1.0, 0.5, 0.5])  # b is alone: neutral


def test_every_numeric_config_key_is_a_feature_named_by_its_key():
    curves = [Curve(values=np.linspace(2, 1, 10), task="t", config_id=str(i),
                    config={"learning_rate": lr, "n_layer": n, "beta 1": 0.9, "momentum": 0.5 + i})
              for i, (lr, n) in enumerate([(1e-4, 2), (1e-3, 4), (1e-2, 8)])]
    found = available(curves, 0.5)
    # log10 where positive and spanning a decade; identifiers made from odd keys; constants dropped
    assert {"log10_learning_rate", "n_layer", "momentum"} <= set(found.names)
    assert "beta_1" not in found.names and "beta_1" in found.constant
    X = feature_matrix(curves, 0.5, found.names, found.config_keys)
    assert np.allclose(X["log10_learning_rate"], [-4, -3, -2]) and np.allclose(X["n_layer"], [2, 4, 8])
    with pytest.raises(DataError, match="no config key 'learning_rate'"):
        feature_matrix([Curve(values=np.ones(5))], 1.0, ["log10_learning_rate"], found.config_keys)


def test_no_curve_feature_is_constant_or_a_copy_at_the_shortest_prefix():
    rng = np.random.default_rng(0)
    curves = [Curve(values=np.r_[3.0, 3.0 + np.cumsum(rng.normal(-0.1, 0.2, 3)), np.full(36, 1.0)], task="t",
                    horizon=40 + (i % 3)) for i in range(30)]   # noisy: the last value is not always the best
    X = feature_matrix(curves, 0.1, CURVE_FEATURES)   # k = 4
    assert all(len(c.values[:4]) == 4 for c in curves)
    names = list(X)
    for i, a in enumerate(names):
        assert np.ptp(X[a]) > 0, f"{a} is constant at k = 4"
        for b in names[i + 1:]:
            assert not np.allclose(X[a], X[b]), f"{a} equals {b} at k = 4"


def test_training_loss_and_schedule_features():
    v = np.array([4.0, 3.0, 2.5, 2.2, 2.0, 1.9])
    u = np.array([4.0, 2.8, 2.2, 1.9, 1.6, 1.5])
    c = Curve(values=v, train_values=u, x=np.array([0, 10, 20, 30, 40, 50.0]),
              config={"max_iters": 300, "warmup_iters": 20})
    X = feature_matrix([c], 4 / 6, ["train_mean", "train_gap", "sched_done", "sched_lr"])
    assert np.isclose(X["train_mean"][0], np.mean((u[:4] - 4.0) / 4.0))
    assert np.isclose(X["train_gap"][0], (2.2 - 1.9) / 4.0)
    assert np.isclose(X["sched_done"][0], 30 / 300)
    assert np.isclose(X["sched_lr"][0], 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 10 / 280)))
    assert set(available([c, c], 0.5, drop_constant=False).names) >= {"train_mean", "sched_lr", "cohort_rank_train"}
    with pytest.raises(DataError, match="no train_values"):
        feature_matrix([Curve(values=v)], 0.5, ["train_mean"])


def test_target_round_trips_to_the_final_value():
    curves = [Curve(values=np.linspace(3, 1, 20)), Curve(values=np.linspace(0.7, 0.5, 30))]
    r = targets(curves, 0.2)
    last, s = prefix_anchors(curves, 0.2)
    assert np.allclose(to_final(r, last, s), [1.0, 0.5])
    assert np.allclose(s, [np.median([3.0, 0.7])] * 2)  # one scale per task: an offset keeps the order
