"""report.html: a run on one page that opens offline.

Everything is inside the file: the plots as base64 PNG, each formula rendered
from its LaTeX by matplotlib's mathtext to an inline SVG (the formula's text
beside it, and only the text where mathtext cannot parse it). No script, no
style sheet or font from the network. Every string from the summary is
HTML-escaped, so a hostile summary.json cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from gpnas.runs.folder import write_atomic

PLOTS = (("plots/curves.png", "Learning curves of the fully trained males"),
         ("plots/predicted_vs_true.png", "Predicted against true final loss"))
MAX_LATEX = 1500  # longer formulas are shown as text only (mathtext is slow on huge input)


def latex_svg(latex: str) -> str | None:
    """The formula as an inline SVG element, or None where mathtext cannot render it."""
    if not latex or len(latex) > MAX_LATEX:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import mathtext

    buffer = io.BytesIO()
    try:
        mathtext.math_to_image(f"${latex}$", buffer, format="svg", dpi=72)
    except Exception:  # mathtext knows a subset of LaTeX; fall back to the text
        return None
    svg = buffer.getvalue().decode("utf-8")
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


def _e(value) -> str:
    return html.escape("n/a" if value is None else str(value))


def _num(value, spec=".4f") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a" if value is None else _e(value)
    return html.escape(format(value, spec))


def _arch(a: dict) -> str:
    if all(k in a for k in ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")):
        return _e(f"n_layer={a.get('n_layer')} n_head={a.get('n_head')} n_embd={a.get('n_embd')} "
                  f"dropout={a.get('dropout')} learning_rate={a.get('learning_rate')}")
    return _e(" ".join(f"{k}={v}" for k, v in a.items()))


def _image(folder: Path, name: str) -> str | None:
    path = folder / name
    if not path.is_file() or path.is_symlink():
        return None
    return base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(summary: dict, folder: Path) -> str:
    """The page's text for a summary and the plots in ``folder``."""
    title = f"gpnas {summary.get('mode')} run, preset {summary.get('preset')}, seed {summary.get('seed')}"
    parts = [f"<h1>{_e(title)}</h1>", f"<p>{_e(summary.get('generations'))} generations; "
             f"run folder <code>{_e(folder.resolve())}</code></p>"]

    rows = []
    best, ref = summary.get("best_architecture"), summary.get("reference")
    if best:
        rows.append(("best found", _arch(best["arch"]), _num(best.get("final_val_loss")),
                     _num(best.get("best_val_loss")), _num(best.get("final_train_loss")),
                     _num(best.get("n_params"), ",")))
    if ref and ref.get("final_val_loss") is not None:
        rows.append(("reference (preset, same training, not charged)", _arch(ref["arch"]),
                     _num(ref.get("final_val_loss")), _num(ref.get("best_val_loss")),
                     _num(ref.get("final_train_loss")), _num(ref.get("n_params"), ",")))
    parts.append("<h2>Architectures</h2>")
    if rows:
        parts.append("<table><tr><th></th><th>architecture</th><th>final val loss</th><th>best val loss</th>"
                     "<th>final train loss</th><th>parameters</th></tr>")
        parts += ["<tr>" + "".join(f"<td>{c if i else _e(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                  for r in rows]
        parts.append("</table>")
    else:
        parts.append("<p>No architecture completed its full training.</p>")

    c = summary.get("compute") or {}
    parts.append(f"<p>Compute charged: {_e(c.get('evaluations'))} evaluations, {_num(c.get('steps'), ',')} steps, "
                 f"{_num(c.get('tokens'), ',')} tokens, {_num(c.get('train_seconds'), '.1f')} s of training.</p>")

    rows = [*(summary.get("females") or []), *(summary.get("baselines") or {}).values()]
    if rows:
        chosen = summary.get("predictor") or {}
        r_range = chosen.get("r_range") or []
        within = (f", r kept within its plausible range [{r_range[0]:.3g}, {r_range[1]:.3g}] (the training curves' "
                  "r widened by half its span)" if len(r_range) == 2 else "")
        parts.append("<h2>Predictor formulas</h2><p>Predicted final validation loss from the early prefix of a "
                     f"learning curve: final = last + scale*(r){_e(within)}. Ordered by the cross-validated "
                     "objective that chose the predictor (<b>*</b> the chosen one); held-out columns on completed "
                     "curves no female was fitted on; the names are explained below the table.</p>")
        if chosen.get("text"):
            parts.append(f"<p>{_e(chosen['text'])}</p>")
        from gpnas.report.run import describe_last_generation  # run.py imports this module lazily

        if describe_last_generation(chosen):
            parts.append(f"<p>{_e(describe_last_generation(chosen))}</p>")
        parts.append("<table><tr><th></th><th>kind</th><th>cv Spearman</th><th>cv regret</th><th>held-out error</th>"
                     "<th>Spearman</th><th>regret</th><th>formula</th></tr>")
        rows.sort(key=lambda r: r["cv_objective"] if isinstance(r.get("cv_objective"), (int, float)) else 1e300)
        for row in rows:
            svg = latex_svg(row.get("latex") or "")
            shown = (f"<div class='math'>{svg}</div>" if svg else "") + f"<code>{_e(row.get('formula'))}</code>"
            parts.append(f"<tr><td>{'*' if row.get('chosen') else ''}</td><td>{_e(row.get('kind', 'tree'))}</td>"
                         f"<td>{_num(row.get('cv_spearman'), '.3f')}</td><td>{_num(row.get('cv_regret'))}</td>"
                         f"<td>{_num(row.get('holdout_error'))}</td><td>{_num(row.get('spearman'), '.3f')}</td>"
                         f"<td>{_num(row.get('regret'))}</td><td>{shown}</td></tr>")
        parts.append("</table>")
        if chosen.get("names"):
            parts.append("<ul>" + "".join(f"<li><code>{_e(name)}</code>: {_e(meaning)}</li>"
                                          for name, meaning in chosen["names"]) + "</ul>")

    cal = summary.get("calibration") or {}
    if isinstance(cal.get("spearman_raw"), (int, float)) and isinstance(cal.get("spearman_last"), (int, float)):
        parts.append(f"<p>The run's honest test of its predictions: the {_e(cal.get('promoted'))} promoted males "
                     "were each predicted before their curves completed, by predictors that had not seen them; "
                     f"those predictions rank their true final losses with Spearman {cal['spearman_raw']:.3f}, "
                     f"the last early value with {cal['spearman_last']:.3f}.</p>")

    parts.append("<h2>Plots</h2>")
    for name, caption in PLOTS:
        data = _image(folder, name)
        if data:
            parts.append(f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{_e(caption)}</figcaption></figure>")

    failures = summary.get("failures") or []
    if failures:
        parts.append(f"<h2>Failed evaluations ({len(failures)})</h2><ul>" + "".join(
            f"<li>{_arch(f.get('arch') or {})}: {_e(f.get('reason'))}</li>" for f in failures[:50]) + "</ul>")

    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;vertical-align:top}code{font-size:90%}.math svg{max-width:100%;height:auto}"
             "img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_html(folder, summary: dict) -> Path:
    folder = Path(folder)
    path = folder / "report.html"
    write_atomic(path, render_html(summary, folder))
    return path


def is_offline(page: str) -> bool:
    """No reference to anything outside the page (what the tests check)."""
    return not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", page)
