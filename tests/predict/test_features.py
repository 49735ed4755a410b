import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpnas.predict.curves import Curve
from gpnas.predict.features import FEATURE_NAMES, FEATURES, feature_matrix, prefix_anchors, targets, to_final
from gpnas.predict.predictor import BASELINES

hostile_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0.0, 1e18, -1e18, 6.3e18, 0.6931, 1e-300]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(hostile_values, min_size=1, max_size=30), min_size=1, max_size=6),
       st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_every_feature_finite_on_hostile_curves(curves_values, frac):
    curves = [Curve(values=np.array(v), task=f"t{i % 2}", horizon=len(v) + i)
              for i, v in enumerate(curves_values)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning inside fails the test
        X = feature_matrix(curves, frac)
    assert set(X) == set(FEATURE_NAMES)
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
    X = feature_matrix(curves, 1.0)
    assert np.allclose(X["cohort_rank_last"], [0.0, 1.0, 0.5, 0.5])  # b is alone: neutral
    assert X["cohort_z_last"][3] == 0


def test_hyperparameters_from_config_with_neutral_defaults():
    curves = [Curve(values=np.ones(5), config={"learning_rate": 0.01, "n_layer": 6, "n_embd": 256,
                                               "dropout": 0.1, "n_params": 1e6}),
              Curve(values=np.ones(5))]
    X = feature_matrix(curves, 1.0)
    assert np.allclose(X["log_lr"], [np.log(0.01), np.log(1e-3)])
    assert np.allclose(X["n_layer"], [6, 4]) and np.allclose(X["dropout"], [0.1, 0])
    assert np.allclose(X["log_n_embd"], [np.log(256), np.log(128)])
    assert np.allclose(X["log_n_params"], [np.log(1e6), np.log(12 * 4 * 128 ** 2)])


def test_target_round_trips_to_the_final_value():
    curves = [Curve(values=np.linspace(3, 1, 20)), Curve(values=np.linspace(0.7, 0.5, 30))]
    r = targets(curves, 0.2)
    last, s = prefix_anchors(curves, 0.2)
    assert np.allclose(to_final(r, last, s), [1.0, 0.5])
