"""Closed forms of female trees: sympy expressions, bounded simplification, exports.

``to_sympy(tree)`` gives an expression over real symbols named exactly after
the features (``sympy.Symbol(name, real=True)``; find them by name through
``expr.free_symbols`` or ``symbol(name)``). It computes the same numbers as
the compiled tree: the protected operators are written out as

    pdiv(a, b)  -> pdiv(a, b), a sympy Function: a / b where |b| > 1e-6, else 1
                   (a Piecewise nested in Piecewise explodes in size; this stays short,
                   has piecewise derivatives and prints as a fraction in LaTeX)
    plog(a)     -> log(Abs(a) + 1e-6)
    cexp(a)     -> exp(Min(a, 20))
    sqrt_abs(a) -> sqrt(Abs(a))

which are differentiable almost everywhere (the engine differentiates with
respect to the hyperparameter symbols). The one difference: the compiled tree
finally maps NaN to 0 and clips to +-1e6; the closed form does not.

``simplify_bounded`` runs ``sympy.simplify`` in a worker thread under a
tracer that aborts it at the deadline, and gives up waiting at the deadline
in any case (a simplify stuck inside one long C call is abandoned, not
awaited): a slow simplify never hangs a run; the unsimplified expression is
the fall-back.
"""

from __future__ import annotations

import sys
import threading
import time

import sympy
from deap import gp as deap_gp
from sympy.printing.numpy import NumPyPrinter

from gpnas.predict import trees

DISPLAY_DIGITS = 3


def symbol(name: str) -> sympy.Symbol:
    """The symbol a feature has in every closed form."""
    return sympy.Symbol(name, real=True)


class pdiv(sympy.Function):
    """Protected division: a / b where |b| > 1e-6, else 1 (kept whole so forms stay short).

    Evaluates to a number when b is a number; its derivatives are the
    piecewise ones (1/b and -a/b**2 where |b| > 1e-6, else 0).
    """

    nargs = 2

    @classmethod
    def eval(cls, a, b):
        if b.is_Number:
            return a / b if abs(float(b)) > trees.DIV_EPS else sympy.Integer(1)
        return None

    def fdiff(self, argindex=1):
        a, b = self.args
        guard = sympy.Abs(b) > trees.DIV_EPS
        d = 1 / b if argindex == 1 else -a / b ** 2
        return sympy.Piecewise((d, guard), (sympy.Integer(0), True))

    def _numpycode(self, printer):
        a, b = (printer.doprint(x) for x in self.args)
        return f"numpy.where(numpy.abs({b}) > {trees.DIV_EPS!r}, ({a}) / ({b}), 1.0)"

    def _latex(self, printer):
        a, b = (printer.doprint(x) for x in self.args)
        return r"\frac{%s}{%s}" % (a, b)


SYMPY_PRIMITIVES = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "pdiv": pdiv,
    "min2": lambda a, b: sympy.Min(a, b),
    "max2": lambda a, b: sympy.Max(a, b),
    "neg": lambda a: -a,
    "plog": lambda a: sympy.log(sympy.Abs(a) + sympy.Float(trees.LOG_EPS)),
    "cexp": lambda a: sympy.exp(sympy.Min(a, sympy.Float(trees.EXP_MAX))),
    "sqrt_abs": lambda a: sympy.sqrt(sympy.Abs(a)),
}


def to_sympy(tree) -> sympy.Expr:
    """The tree as a sympy expression over ``symbol(feature)`` (same numbers as the tree)."""
    stack: list = []
    for node in reversed(list(tree)):  # prefix order read backwards: children are on the stack
        if isinstance(node, deap_gp.Primitive):
            args = [stack.pop() for _ in range(node.arity)]
            stack.append(SYMPY_PRIMITIVES[node.name](*args))
        elif isinstance(node.value, str):
            stack.append(symbol(node.value))
        else:
            stack.append(sympy.Float(float(node.value)))
    if len(stack) != 1:
        raise ValueError("malformed tree")
    return stack[0]


class _Abort(BaseException):
    """Raised inside the simplify thread at the deadline (BaseException: not swallowed by sympy)."""


def _quiet_aborts(previous):
    """Generators that sympy's unwinding closes raise _Abort again; Python reports
    each as 'Exception ignored in ...'. Those reports (and only those) are dropped."""
    def hook(unraisable):
        if not isinstance(unraisable.exc_value, _Abort):
            previous(unraisable)
    hook.gpnas_quiet_aborts = True
    return hook


def simplify_bounded(expr, timeout_s: float = 2.0, simplify=None) -> sympy.Expr:
    """``sympy.simplify(expr)``, or ``expr`` itself if that takes longer than ``timeout_s``.

    Also falls back to ``expr`` when simplify fails or returns something
    longer. ``simplify`` replaces sympy.simplify (tests).
    """
    simplify = simplify or sympy.simplify
    deadline = time.monotonic() + timeout_s
    result: dict = {}

    def tracer(frame, event, arg):  # called on every Python function call in the thread
        if time.monotonic() > deadline:
            raise _Abort
        return None  # no per-line tracing: cheap

    def work():
        sys.settrace(tracer)
        try:
            result["expr"] = simplify(expr)
        except _Abort:
            result["aborted"] = True
        except Exception as error:  # a simplify bug is not our run's problem
            result["error"] = error
        finally:
            sys.settrace(None)

    if not getattr(sys.unraisablehook, "gpnas_quiet_aborts", False):
        sys.unraisablehook = _quiet_aborts(sys.unraisablehook)
    thread = threading.Thread(target=work, name="gpnas-simplify", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.05)
    out = result.get("expr")
    if out is None or sympy.count_ops(out) > sympy.count_ops(expr):
        return expr
    return out


def round_constants(expr, digits: int = DISPLAY_DIGITS) -> sympy.Expr:
    """Floats rounded to ``digits`` significant digits: for display only."""
    return expr.xreplace({f: sympy.Float(float(f"{float(f):.{digits}g}"), digits)
                          for f in expr.atoms(sympy.Float)})


def as_text(expr) -> str:
    return str(round_constants(expr))


def shorten(text: str, width: int = 110) -> str:
    """A formula cut to ``width`` characters for a table row (the files hold it whole)."""
    return text if len(text) <= width else text[: width - 3] + "..."


def as_latex(expr) -> str:
    return sympy.latex(round_constants(expr))


def as_python(expr, name: str = "predict", target: str = "raw", r_range: tuple | None = None,
              input_ranges: dict | None = None) -> str:
    """A self-contained Python function (numpy only) computing ``expr`` at full precision.

    Arguments are the features the expression uses, in alphabetical order;
    with ``target="final"`` two more, ``last`` and ``scale``, and it returns
    ``last + scale * r`` (features.to_final), r clipped to ``r_range = (lo, hi)`` when given,
    and each feature first clipped to its ``input_ranges`` entry (the training range).
    """
    names = sorted(s.name for s in expr.free_symbols)
    args = names + (["last", "scale"] if target == "final" else [])
    body = NumPyPrinter().doprint(expr)
    doc = "Evolved by gpnas; features as documented in gpnas.predict.features."
    lines = ["import functools  # numpy's printer folds Min/Max with functools.reduce", "import numpy", "", "", f"def {name}({', '.join(args)}):", f'    """{doc}"""']
    for arg in names:
        if input_ranges and arg in input_ranges:
            lo, hi = input_ranges[arg]
            lines.append(f"    {arg} = numpy.clip({arg}, {float(lo)!r}, {float(hi)!r})  # the range it was fitted on")
    lines += ['    with numpy.errstate(all="ignore"):  # protected ops evaluate both branches',
              f"        r = {body}"]
    if r_range is not None:
        lines += [f"    r = numpy.clip(r, {float(r_range[0])!r}, {float(r_range[1])!r})"]
    lines += ["    return last + scale * r" if target == "final" else "    return r"]
    return "\n".join(lines) + "\n"


# ---- words for the names a formula uses ----

PLAIN_NAMES = {
    "last": "the early curve's last value (the loss at the cut)",
    "scale": "the loss scale S: the median first value of the task's curves passed together "
             "(final = last + S * r, so r is a fraction of the starting loss)",
    "pdiv": "pdiv(a, b) = a / b, and 1 where |b| <= 1e-6",
}


def glossary(texts, features: dict, config_keys: dict) -> list[tuple[str, str]]:
    """(name, meaning in words) for every name the formula ``texts`` use, in the order
    of ``PLAIN_NAMES``, then the features': ``features`` maps a feature name to its
    documented formula (``features.FEATURES``), ``config_keys`` a config feature to its key."""
    import re

    used = {w for text in texts for w in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text or "")}
    out = [(n, meaning) for n, meaning in PLAIN_NAMES.items() if n in used]
    for name in sorted(used):
        if name in features:
            out.append((name, features[name].split("=", 1)[-1].strip() if "=" in features[name] else features[name]))
        elif name in config_keys:
            key = config_keys[name]
            out.append((name, f"log10 of the config's {key}" if name != key else f"the config's {key}"))
    return out


def linear_text(intercept: float, terms: list[tuple[str, float, float]], keep: int = 5) -> str:
    """r of the linear model with its ``keep`` largest terms and a count of the rest.
    ``terms``: (feature, coefficient, how far the term moves r over the feature's
    training range); the largest are those that move r most."""
    nonzero = [t for t in terms if t[1] != 0]
    shown = sorted(nonzero, key=lambda t: -t[2])[:keep]
    text = f"{intercept:.3g}" + "".join(f" {'-' if b < 0 else '+'} {abs(b):.3g}*{name}" for name, b, _ in shown)
    rest = len(nonzero) - len(shown)
    if rest:
        largest = max(t[2] for t in nonzero if t not in shown)
        text += f" + ({rest} smaller terms, each moving r by at most {largest:.2g})"
    return text
