from gpnas.report.run import formulas_markdown


def row(kind, formula, chosen=False):
    return {"kind": kind, "tree": "", "formula": formula, "latex": "", "complexity": 3, "chosen": chosen,
            "cv_objective": 0.1, "cv_spearman": 0.9, "cv_regret": 0.01, "cv_error": 0.02,
            "holdout_error": 0.03, "spearman": 0.8, "regret": 0.02}


def test_the_linear_model_is_listed_with_its_formula():
    linear = "last + scale*(0.1*dropout - 0.2*rel_last + 0.05)"
    summary = {"mode": "combined", "seed": 0, "predictor": {"text": "chosen: the linear model over the 2 features"},
               "females": [], "baselines": {"linear": row("linear", linear, chosen=True), "last": row("last", "last")}}
    text = formulas_markdown(summary)
    assert "- linear (chosen): cross-validated Spearman 0.9" in text
    assert f"```\n{linear}\n```" in text
    assert "```\nlast\n```" not in text   # the baselines' one line says what they are


def test_the_plausible_range_is_stated_once_and_the_names_explained():
    summary = {"mode": "combined", "seed": 0,
               "predictor": {"text": "chosen: a formula", "r_range": [-0.257, -0.0518],
                             "names": [["last", "the early curve's last value"], ["rel_last", "how far it fell"]]},
               "females": [row("tree", "last + scale*(-0.4*rel_last - 0.1)", chosen=True),
                           row("tree", "last + scale*(-0.3*rel_last)")], "baselines": {}}
    text = formulas_markdown(summary)
    assert text.count("[-0.257, -0.0518]") == 1 and "Min(" not in text
    assert "- `rel_last`: how far it fell" in text and "## The names in these formulas" in text


def test_promotions_give_the_honest_spearman_of_predictions_made_before_the_curves_completed():
    from gpnas.report.run import calibration_summary

    true = [2.0, 2.1, 2.2, 2.3, 2.4, 2.5]
    promotions = [{"predicted": t + 0.01, "raw": t + 0.05 * (i % 2), "true": t} for i, t in enumerate(true)]
    lasts = [3.0 - 0.1 * i for i in range(6)]            # the last early value ranks them backwards
    out = calibration_summary(promotions, lasts)
    assert out["promoted"] == 6 and out["spearman_last"] == -1.0 and 0.8 < out["spearman_raw"] <= 1.0
    assert "spearman_raw" not in calibration_summary(promotions)             # no early values: no figure
    assert "spearman_raw" not in calibration_summary(promotions[:4], lasts[:4])   # too few to rank


def test_the_page_states_the_promotions_honest_test(tmp_path):
    from gpnas.report.html import render_html

    page = render_html({"mode": "combined", "calibration": {"promoted": 20, "spearman_raw": 0.317,
                                                             "spearman_last": 0.325}}, tmp_path)
    assert "Spearman 0.317, the last early value with 0.325" in page
    assert "honest test" not in render_html({"mode": "combined", "calibration": {"promoted": 3}}, tmp_path)
