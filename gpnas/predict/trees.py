"""The female primitive set, safe tree parsing, vectorised compilation, seeded operators.

A female is a ``Tree`` (a DEAP PrimitiveTree with a fitness) over named
feature terminals (``features.FEATURES``) and ephemeral constants, with the
protected primitives listed below. Every primitive is a numpy function that
works on whole columns, so one compiled tree maps all curves at once.

Protected operators (the same definitions are used by ``closedform``):

    pdiv(a, b)   = a / b  if |b| > 1e-6  else 1
    plog(a)      = ln(|a| + 1e-6)
    cexp(a)      = exp(min(a, 20))
    sqrt_abs(a)  = sqrt(|a|)
    min2, max2, add, sub, mul, neg as usual

A compiled tree's output is made finite at the end: NaN -> 0, and values are
clipped to +-1e6 (``OUTPUT_CLIP``); nothing inside warns.

DEAP's generators and operators draw from the global ``random`` module; every
operator here takes an explicit ``random.Random`` and runs DEAP inside
``deap_random(rng)``, which lends that generator's state to ``random`` and
restores the caller's global state afterwards.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from deap import base, gp, tools

from gpnas.errors import FileFormatError
from gpnas.predict.features import CURVE_FEATURES, FEATURES

DIV_EPS = 1e-6
LOG_EPS = 1e-6
EXP_MAX = 20.0
OUTPUT_CLIP = 1e6
CONST_NAME = "const"


class TreeFitness(base.Fitness):
    """A tree's fitness: its prediction error, minimised."""
    weights = (-1.0,)


class Tree(gp.PrimitiveTree):
    """A predictor tree with a DEAP fitness; the search's ``Tree`` is this class.

    Written as a plain class rather than with ``deap.creator`` so the predictor
    side can fit trees without the search (the search's creator module makes
    only the males' classes) and so trees pickle by their module path.
    """

    def __init__(self, content):
        super().__init__(content)
        self.fitness = TreeFitness()


@dataclass(frozen=True)
class GPConfig:
    """Tree shape limits and operator rates for the female population."""
    init_min_depth: int = 1
    init_max_depth: int = 3
    max_depth: int = 7          # height limit for offspring (bloat control)
    max_size: int = 31          # node limit for offspring (bloat control)
    tournament_size: int = 5    # fitness tournament of the double tournament
    parsimony_size: float = 1.4  # size tournament: 1 = none, 2 = always the smaller
    p_cx: float = 0.5
    p_mut: float = 0.4
    const_sigma: float = 0.3    # Gaussian jitter of a constant in mutation


# ---- protected numpy primitives (vectorised; scalars work too) ----

def add(a, b):
    return np.add(a, b)


def sub(a, b):
    return np.subtract(a, b)


def mul(a, b):
    return np.multiply(a, b)


def neg(a):
    return np.negative(a)


def pdiv(a, b):
    # evaluates a / b everywhere: callers run under np.errstate(all="ignore") (compile_tree does)
    return np.where(np.abs(b) > DIV_EPS, np.divide(a, b), 1.0)


def plog(a):
    return np.log(np.abs(a) + LOG_EPS)


def cexp(a):
    return np.exp(np.minimum(a, EXP_MAX))


def sqrt_abs(a):
    return np.sqrt(np.abs(a))


def min2(a, b):
    return np.minimum(a, b)


def max2(a, b):
    return np.maximum(a, b)


PRIMITIVES = {"add": (add, 2), "sub": (sub, 2), "mul": (mul, 2), "pdiv": (pdiv, 2),
              "min2": (min2, 2), "max2": (max2, 2), "neg": (neg, 1), "plog": (plog, 1),
              "cexp": (cexp, 1), "sqrt_abs": (sqrt_abs, 1)}


def _draw_constant() -> float:
    """A constant in [-2, 2] with two decimals (drawn from the global random DEAP lends us)."""
    return round(random.uniform(-2.0, 2.0), 2)


def make_pset(feature_names: Sequence[str] = CURVE_FEATURES) -> gp.PrimitiveSet:
    """The primitive set: features as named arguments, protected ops, constants.

    Names are the features' (``features.FEATURES``) or config keys' terminal
    names (``features.config_name``): identifiers that are no primitive.
    """
    names = list(feature_names)
    bad = [n for n in names if not isinstance(n, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)
           or n in PRIMITIVES or n == CONST_NAME]
    if bad or len(set(names)) != len(names) or not names:
        raise ValueError(f"feature names must be distinct identifiers that are no primitive, got {bad or names}")
    pset = gp.PrimitiveSet("FEMALE", len(names))
    for name, (func, arity) in PRIMITIVES.items():
        pset.addPrimitive(func, arity, name=name)
    pset.addEphemeralConstant(CONST_NAME, _draw_constant)
    pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(names)})
    return pset


def config_terminals(pset) -> list[str]:
    """The terminals of ``pset`` that read a config key (a hyperparameter), not the curve."""
    return [name for name in pset.arguments if name not in FEATURES]


def _constant(pset, value: float):
    """An ephemeral-constant node holding ``value`` (without drawing a random one)."""
    cls = pset.mapping[CONST_NAME]
    node = cls.__new__(cls)
    node.value = float(value)
    return node


# ---- safe parsing ----

_TOKEN = re.compile(r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))")
MAX_TREE_TEXT = 100_000
MAX_PARSE_DEPTH = 60  # far beyond any evolved tree (max_depth 7); keeps recursion bounded


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FileFormatError(f"tree: unexpected character {text[pos:pos + 10]!r} at {pos}; "
                                  "a tree holds only primitive names, feature names, numbers, ( ) ,")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse_tree(text: str, pset) -> Tree:
    """A Tree from its string, checking every token against ``pset`` first.

    Nothing is evaluated: the text is tokenised (names, float literals,
    parentheses, commas only), every name must be a primitive or terminal of
    ``pset`` and arities must match, all before a node is built.
    FileFormatError otherwise.
    """
    if not isinstance(text, str) or not text.strip():
        raise FileFormatError("tree: expected a non-empty tree string")
    if len(text) > MAX_TREE_TEXT:  # before tokenising: a huge text would cost time and memory first
        raise FileFormatError(f"tree: too large ({len(text):,} characters; the limit is {MAX_TREE_TEXT:,} "
                              f"characters and {MAX_PARSE_DEPTH} levels of nesting)")
    toks = _tokens(text)
    prims = {p.name: p for p in pset.primitives[pset.ret]}
    terms = {name: pset.mapping[name] for name in pset.arguments}
    pos = 0

    def expect(value):
        nonlocal pos
        if pos >= len(toks) or toks[pos][1] != value:
            found = toks[pos][1] if pos < len(toks) else "end of text"
            raise FileFormatError(f"tree: expected '{value}' but found '{found}'")
        pos += 1

    def node(depth=0):  # recursive descent; returns a list of (kind, payload) in prefix order
        nonlocal pos
        if depth > MAX_PARSE_DEPTH:
            raise FileFormatError(f"tree: too large (nested deeper than the limit of {MAX_PARSE_DEPTH} levels)")
        if pos >= len(toks):
            raise FileFormatError("tree: unexpected end of text")
        kind, tok = toks[pos]
        pos += 1
        if kind == "num":
            value = float(tok)
            if not np.isfinite(value):
                raise FileFormatError(f"tree: constant {tok} is not finite")
            return [("const", value)]
        if kind != "name":
            raise FileFormatError(f"tree: unexpected '{tok}'")
        if tok in terms:
            return [("term", tok)]
        if tok not in prims:
            raise FileFormatError(f"tree: unknown name '{tok}'; allowed: primitives "
                                  f"{', '.join(prims)} and features {', '.join(terms)}")
        out = [("prim", tok)]
        expect("(")
        for i in range(prims[tok].arity):
            if i:
                expect(",")
            out += node(depth + 1)
        expect(")")
        return out

    plan = node()
    if pos != len(toks):
        raise FileFormatError(f"tree: trailing text after the tree: '{toks[pos][1]}'")
    nodes = [prims[p] if k == "prim" else terms[p] if k == "term" else _constant(pset, p)
             for k, p in plan]
    return Tree(nodes)


# ---- vectorised compilation ----

def _closure(tree, i: int):
    """Build the closure of the subtree starting at node i; returns (fn, next index)."""
    node = tree[i]
    if isinstance(node, gp.Primitive):
        func = PRIMITIVES[node.name][0]
        args, j = [], i + 1
        for _ in range(node.arity):
            fn, j = _closure(tree, j)
            args.append(fn)
        if node.arity == 1:
            (f1,) = args
            return (lambda X: func(f1(X))), j
        f1, f2 = args
        return (lambda X: func(f1(X), f2(X))), j
    if isinstance(node.value, str):  # a named feature
        name = node.value
        return (lambda X: X[name]), i + 1
    value = float(node.value)
    return (lambda X: value), i + 1


def compile_tree(tree, pset=None) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """A function mapping feature columns (name -> (m,) array) to (m,) finite predictions.

    Built once from the tree's nodes (no text is evaluated); every call is a
    handful of numpy operations on whole columns.
    """
    fn, end = _closure(tree, 0)
    if end != len(tree):
        raise ValueError("malformed tree: nodes left over after the root's subtree")

    def run(X):
        m = len(next(iter(X.values())))
        with np.errstate(all="ignore"):
            out = np.asarray(fn(X), dtype=np.float64)
            if out.ndim == 0:
                out = np.full(m, float(out))
            out = np.clip(out, -OUTPUT_CLIP, OUTPUT_CLIP)  # +-inf -> +-clip; NaN stays NaN
            nan = np.isnan(out)
            if nan.any():
                out[nan] = 0.0
            return out
    return run


def compile_tree_rows(tree, pset) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """DEAP's usual per-row evaluation (gp.compile, one call per curve), for checks and benchmarks.

    Uses DEAP's eval of the tree's own string: only for trees built or parsed
    here, never for text from a file.
    """
    f = gp.compile(tree, pset)
    names = list(pset.arguments)

    def run(X):
        cols = [np.asarray(X[n], dtype=np.float64) for n in names]
        out = np.empty(len(cols[0]))
        with np.errstate(all="ignore"):
            for r in range(len(out)):
                out[r] = f(*(float(c[r]) for c in cols))
        return np.clip(np.nan_to_num(out, nan=0.0), -OUTPUT_CLIP, OUTPUT_CLIP)
    return run


# ---- operators with explicit generators ----

@contextlib.contextmanager
def deap_random(rng: random.Random):
    """Lend ``rng``'s state to the global ``random`` for DEAP, then give it back.

    Afterwards ``rng`` has advanced exactly as if DEAP had drawn from it, and
    the global generator is as the caller left it.
    """
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)


def random_tree(pset, rng: random.Random, config: GPConfig = GPConfig()) -> Tree:
    """A ramped half-and-half tree within the size and depth limits (redrawn until it fits)."""
    with deap_random(rng):
        while True:
            tree = Tree(gp.genHalfAndHalf(pset, config.init_min_depth, config.init_max_depth))
            if _fits(tree, config):
                return tree


def _fits(tree, config: GPConfig) -> bool:
    return tree.height <= config.max_depth and len(tree) <= config.max_size


def _fresh(tree) -> Tree:
    child = Tree(list(tree))
    return child  # a new Tree has an invalid (empty) fitness


def cx_tree(a, b, rng: random.Random, config: GPConfig = GPConfig()) -> tuple[Tree, Tree]:
    """One-point subtree crossover; returns two new trees (the parents are untouched).

    A child beyond the depth or size limit is replaced by a copy of its parent.
    """
    c1, c2 = _fresh(a), _fresh(b)
    with deap_random(rng):
        c1, c2 = gp.cxOnePoint(c1, c2)
    return (c1 if _fits(c1, config) else _fresh(a)), (c2 if _fits(c2, config) else _fresh(b))


def mut_tree(tree, pset, rng: random.Random, config: GPConfig = GPConfig()) -> Tree:
    """One mutation, chosen uniformly: new subtree, node replacement, shrink, or constant jitter.

    Returns a new tree (the input is untouched); a result beyond the limits
    falls back to a copy of the input.
    """
    child = _fresh(tree)
    kind = rng.randrange(4)
    with deap_random(rng):
        if kind == 0:
            (child,) = gp.mutUniform(child, expr=lambda pset, type_: gp.genFull(pset, 0, 2), pset=pset)
        elif kind == 1:
            (child,) = gp.mutNodeReplacement(child, pset=pset)
        elif kind == 2:
            (child,) = gp.mutShrink(child)
    if kind == 3:
        consts = [i for i, node in enumerate(child) if isinstance(node, gp.Terminal)
                  and not isinstance(node.value, str)]
        if consts:
            i = consts[rng.randrange(len(consts))]
            child[i] = _constant(pset, round(child[i].value + rng.gauss(0.0, config.const_sigma), 3))
        else:  # no constant to jitter: grow a subtree instead
            with deap_random(rng):
                (child,) = gp.mutUniform(child, expr=lambda pset, type_: gp.genFull(pset, 0, 2), pset=pset)
    child = Tree(child)
    return child if _fits(child, config) else _fresh(tree)


def sel_parsimony(population, k: int, rng: random.Random, config: GPConfig = GPConfig()) -> list:
    """Double tournament (Luke & Panait 2002): fitness tournaments, then a size tournament.

    Selected individuals are the population's objects (clone before changing).
    """
    with deap_random(rng):
        return tools.selDoubleTournament(population, k, fitness_size=config.tournament_size,
                                         parsimony_size=config.parsimony_size, fitness_first=True)


def tree_string(tree) -> str:
    """The tree as text; constants are written with repr, so parse_tree round-trips exactly."""
    return str(tree)
