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
