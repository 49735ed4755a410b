"""Presets: the search space, budgets and GA parameters of a run, from TOML.

A preset is a TOML file with top-level ``name``, ``description``, ``seed`` and
five tables:

- ``[space]``: one table per gene. ``n_layer``, ``n_head``, ``n_embd`` are
  integers given as ``{min, max}`` (``n_embd`` may add ``step``) or
  ``{choices = [...]}``; ``dropout`` and ``learning_rate`` are ``{min, max}``
  (or choices); ``learning_rate`` is searched in log10 space (``log = true``).
- ``[budget]``: training steps and batch shapes (see ``BudgetConfig``).
- ``[ga]``: population sizes and operator parameters (see ``GAConfig``).
- ``[reference]``: the preset's reference architecture (the baseline anchor).

Bare names resolve to ``gpnas/presets/<name>.toml`` (package data, so an
installed gpnas finds them); anything else is a path. Overrides are
``"section.key=value"`` strings (``--set`` on the CLI) whose value is parsed as
TOML. Every problem is a one-line ConfigError naming the key and the fix.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from gpnas.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"
# The genes the nanoGPT evaluation task understands (a preset searches any of them; a gene
# it leaves out is fixed at the reference), which of them are integers, and its constraint.
SPACE_GENES = ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")
INT_GENES = frozenset({"n_layer", "n_head", "n_embd"})
NANOGPT_CONSTRAINTS = (("multiple", "n_embd", "n_head"),)
GENE_KEYS = ("min", "max", "step", "choices", "log")
# A preset whose largest architecture would need more than this is refused
# before anything trains (see estimate_memory_bytes).
MAX_MEMORY_BYTES = 256 * 2**30
MAX_TREE_DEPTH = 50   # <= gp.MAX_PARSE_DEPTH: every evolved tree can be read back from a snapshot
MAX_TREE_SIZE = 1000  # nodes; its text stays far below gp.MAX_TREE_TEXT
# The largest value of every size a preset gives: far beyond the presets shipped (shakespeare-char:
# 16 males, 64 females, 5000 steps), small enough that a slip (ga.n_males = 100000000000) is one line
# at load time, not a run folder and a process that grows for minutes. tree_max_* are bounded above.
SIZE_LIMITS = {
    "ga.n_males": 10_000, "ga.n_females": 10_000, "ga.seed_archive": 10_000, "ga.son_candidates": 1_000,
    "ga.female_steps": 1_000,
    "budget.early_iters": 10_000_000, "budget.full_iters": 10_000_000, "budget.eval_interval": 10_000_000,
    "budget.warmup_iters": 10_000_000, "budget.eval_batches": 100_000, "budget.block_size": 1_000_000,
    "budget.batch_size": 1_000_000, "budget.eval_timeout_s": 30 * 24 * 3600.0,
}
MAX_CURVE_POINTS = 100_000  # validation evaluations in one full run (full_iters / eval_interval + 1)
# The search's own memory (populations, son candidates, trees), estimated by estimate_search_bytes
MAX_SEARCH_BYTES = 8 * 2**30


@dataclass(frozen=True)
class GeneSpec:
    """The allowed values of one gene: ``choices``, or ``min``..``max`` (``step`` for integers).

    An ``integer`` gene takes whole values; ``log`` searches it in log10 space."""

    name: str
    min: float | None = None
    max: float | None = None
    step: int | None = None
    choices: tuple | None = None
    log: bool = False
    integer: bool = False
    # a table's recorded values of a continuous gene, sorted: its normalised units follow their
    # empirical distribution (a quantile warp), so sampling and nearest-config decoding spread
    # over the recorded configs instead of piling onto the few at the edge of sparse regions
    quantiles: tuple | None = None

    @property
    def discrete(self) -> bool:
        return self.integer or self.choices is not None

    @property
    def low(self) -> float:
        return min(self.choices) if self.choices is not None else self.min

    @property
    def high(self) -> float:
        return max(self.choices) if self.choices is not None else self.max

    def values(self) -> tuple:
        """All allowed values of a discrete gene, sorted (empty for continuous genes)."""
        if self.choices is not None:
            return tuple(sorted(set(self.choices)))
        if self.integer:
            return tuple(range(int(self.min), int(self.max) + 1, self.step or 1))
        return ()

    def contains(self, value: float) -> bool:
        if self.discrete:
            return value in self.values()
        return self.low <= value <= self.high

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("min", "max", "step") if getattr(self, k) is not None}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.log:
            d["log"] = True
        if self.quantiles is not None:
            d["quantiles"] = list(self.quantiles)
        return d


@dataclass(frozen=True)
class SpaceConfig:
    """A search space as data: its genes in order, and the constraints its evaluation
    task declares (``("multiple", a, b)``: gene a is a multiple of gene b).
    ``search.space.Space`` gives it its geometry; ``space.NAME`` is ``space.gene(NAME)``."""

    genes: tuple[GeneSpec, ...]
    constraints: tuple[tuple[str, str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.genes)

    def gene(self, name: str) -> GeneSpec:
        for g in self.genes:
            if g.name == name:
                return g
        raise KeyError(f"no gene {name!r} in the space (genes: {', '.join(self.names)})")

    def __getattr__(self, name: str) -> GeneSpec:
        if name.startswith("_") or name in ("genes", "constraints"):
            raise AttributeError(name)
        try:
            return self.gene(name)
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return {g.name: g.to_dict() for g in self.genes}


@dataclass(frozen=True)
class BudgetConfig:
    """Training budget in optimizer steps; every run lays its LR schedule over ``full_iters``."""

    early_iters: int    # the early run that scores a male (a prefix of the full run)
    full_iters: int     # a promoted male's complete run (TrainConfig.max_iters)
    eval_interval: int  # steps between validation evaluations
    eval_batches: int   # fixed validation batches per evaluation
    block_size: int
    batch_size: int
    warmup_iters: int
    eval_timeout_s: float = 0.0  # one evaluation's wall-time limit; 0: derived (eval_time_limit)

    @property
    def prefix_frac(self) -> float:
        """Fraction of the full run an early run covers; its curve is that prefix of the full curve."""
        return self.early_iters / self.full_iters


SON_RANKERS = ("mother", "judged", "predictor", "surrogate")


@dataclass(frozen=True)
class GAConfig:
    n_males: int = 8
    n_females: int = 32
    male_elites: int = 1
    female_elites: int = 2
    promote_k: int = 2            # males promoted to full training per generation by prediction
    calibration: bool = True      # plus one random male, so the predictors see unbiased outcomes
    seed_archive: int = 4         # random males trained to completion in generation 0
    mutation_sigma: float = 0.15  # Gaussian mutation, in units of each gene's range (0..1)
    guided_step: float = 0.2      # a son candidate's step in a continuous gene, in units of its range
    son_candidates: int = 8       # m: neighbours of the father the mother ranks to choose the son
    p_guided: float = 1.0         # probability the son is the mother's choice when she has one
    son_ranker: str = "mother"    # who ranks a father's candidate neighbours: the mother's formula, the formula of
                                  # the female who judges his neighbourhood best ("judged"), the run's chosen
                                  # predictor, or the surrogate of its early values (search.surrogate)
    cohort: str = "call"          # cohort features rank a curve among the curves of one call ("call"), or
                                  # against every config the run has started ("run": the same at fit and predict)
    cx_prob: float = 0.5          # within-gender mode: crossover probability per pair
    mut_prob: float = 0.5         # within-gender mode: mutation probability per child
    tree_max_depth: int = 8
    tree_max_size: int = 40
    female_steps: int = 4         # GP generations of the females per engine generation
    top_females: int = 3          # male fitness: mean prediction of this many best females
    male_tournament: int = 3
    female_tournament: int = 3
    parsimony_size: float = 1.4   # DEAP double tournament: 1 (no pressure) .. 2


@dataclass(frozen=True)
class Reference:
    """The preset's reference architecture (nanoGPT's for shakespeare-char)."""

    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    learning_rate: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    seed: int
    space: SpaceConfig
    budget: BudgetConfig
    ga: GAConfig
    reference: Reference


# ---------------------------------------------------------------- loading

def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name_or_path: str | Path, overrides: Sequence[str] = ()) -> Preset:
    """Read a preset by name (``gpnas/presets``) or path, apply ``section.key=value`` overrides."""
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text or "\\" in text
    path = Path(text) if is_path else PRESETS_DIR / f"{text}.toml"
    if not path.is_file():
        if is_path:
            raise ConfigError(f"preset file {text} not found; give an existing .toml file or a preset name")
        raise ConfigError(f"unknown preset {text!r}; use one of {', '.join(available_presets())} or a .toml path")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"preset {path}: not valid TOML ({e}); fix the file") from None
    raw.setdefault("name", path.stem)
    for item in overrides:
        _apply_override(raw, item)
    return _build(raw, f"preset {raw['name']}")


def preset_to_dict(preset: Preset) -> dict:
    """The resolved preset as plain JSON-able data, laid out like the TOML file."""
    return {
        "name": preset.name,
        "description": preset.description,
        "seed": preset.seed,
        "space": preset.space.to_dict(),
        "budget": asdict(preset.budget),
        "ga": asdict(preset.ga),
        "reference": preset.reference.as_dict(),
    }


def preset_from_dict(d: Mapping) -> Preset:
    """Inverse of preset_to_dict (validated like a TOML file)."""
    return _build(_copy(d), f"config {d.get('name', '?')}")


def _copy(d):
    return {k: _copy(v) for k, v in d.items()} if isinstance(d, Mapping) else d


def _apply_override(raw: dict, item: str) -> None:
    where = f"--set {item}"
    if "=" not in item:
        raise ConfigError(f"{where}: expected KEY=VALUE, for example ga.n_males=6")
    key, value_text = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text  # a bare word: a string; type checks below catch misuse
    parts = key.split(".")
    schema = {
        "budget": {f.name for f in fields(BudgetConfig)},
        "ga": {f.name for f in fields(GAConfig)},
        "reference": {f.name for f in fields(Reference)},
    }
    def table(parent: dict, name: str) -> dict:
        t = parent.setdefault(name, {})
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[:-1])} is not a table in the preset; fix the preset")
        return t

    if parts in (["name"], ["description"], ["seed"]):
        raw[parts[0]] = value
    elif len(parts) == 2 and parts[0] in schema and parts[1] in schema[parts[0]]:
        table(raw, parts[0])[parts[1]] = value
    elif len(parts) == 3 and parts[0] == "space" and parts[1] in SPACE_GENES and parts[2] in GENE_KEYS:
        gene = table(table(raw, "space"), parts[1])
        # Setting choices replaces a range, and setting a bound replaces choices.
        replaced = {"choices": ("min", "max", "step"), "min": ("choices",), "max": ("choices",),
                    "step": ("choices",)}.get(parts[2], ())
        for k in replaced:
            gene.pop(k, None)
        gene[parts[2]] = value
    else:
        raise ConfigError(
            f"{where}: unknown key {key}; use name, description, seed, space.<gene>.<min|max|step|choices|log> "
            f"(genes {', '.join(SPACE_GENES)}), budget.<key>, ga.<key> or reference.<key>")


def space_from_dict(genes: Mapping, src: str, constraints: tuple = ()) -> SpaceConfig:
    """A space of any genes, each ``{min, max[, step][, log]}`` or ``{choices}`` (a table's,
    ``runs.table.infer_space``): a gene is an integer gene when its bounds or choices are
    all integers; choices may be strings. ConfigError naming the gene otherwise."""
    specs = []
    for name, table in genes.items():
        key = f"space.{name}"
        if not isinstance(table, Mapping):
            _fail(src, f"{key} must be a table like {{ min = ..., max = ... }} or {{ choices = [...] }}")
        _check_keys(table, {*GENE_KEYS, "quantiles"}, f"{key}.", src)
        log = _typed(table.get("log", False), bool, f"{key}.log", src)
        if "choices" in table:
            choices = table["choices"]
            if not isinstance(choices, list) or not choices or not all(
                    isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in choices):
                _fail(src, f"{key}.choices must be a non-empty list of numbers or strings")
            integer = all(isinstance(v, int) for v in choices)
            specs.append(GeneSpec(name, choices=tuple(choices), log=log, integer=integer))
            continue
        for k in ("min", "max"):
            if k not in table:
                _fail(src, f"missing key {key}.{k}; give min and max, or choices")
        integer = all(isinstance(table[k], int) and not isinstance(table[k], bool) for k in ("min", "max"))
        lo, hi = (_typed(table[k], int if integer else float, f"{key}.{k}", src) for k in ("min", "max"))
        if lo > hi:
            _fail(src, f"{key}: empty range, min {lo} > max {hi}; make min <= max")
        if log and lo <= 0:
            _fail(src, f"{key}.log: a log gene needs min > 0")
        step = _typed(table["step"], int, f"{key}.step", src) if "step" in table else None
        quantiles = table.get("quantiles")
        if quantiles is not None:
            if integer or not isinstance(quantiles, list) or len(quantiles) < 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi for v in quantiles):
                _fail(src, f"{key}.quantiles must list at least 2 numbers within [min, max] of a float gene")
            quantiles = tuple(sorted(float(v) for v in quantiles))
        specs.append(GeneSpec(name, min=lo, max=hi, step=step, log=log, integer=integer, quantiles=quantiles))
    if not specs:
        _fail(src, "the space names no gene")
    return SpaceConfig(tuple(specs), tuple(constraints))


# ---------------------------------------------------------------- validation

def _build(raw: Mapping, src: str) -> Preset:
    _check_keys(raw, {"name", "description", "seed", "space", "budget", "ga", "reference"}, "", src)
    name = _typed(raw.get("name", ""), str, "name", src)
    description = _typed(raw.get("description", ""), str, "description", src)
    seed = _typed(raw.get("seed", 0), int, "seed", src)
    _check_keys(_table(raw, "space", src), set(SPACE_GENES), "space.", src)
    searched = [g for g in SPACE_GENES if g in _table(raw, "space", src)]
    if not searched:
        _fail(src, f"[space] names no gene; search at least one of {', '.join(SPACE_GENES)}")
    space = SpaceConfig(tuple(_gene(g, _table(raw, "space", src)[g], src) for g in searched), NANOGPT_CONSTRAINTS)
    budget = _dataclass(BudgetConfig, _table(raw, "budget", src), "budget", src)
    ga = _dataclass(GAConfig, _table(raw, "ga", src), "ga", src)
    reference = _dataclass(Reference, _table(raw, "reference", src), "reference", src)
    preset = Preset(name, description, seed, space, budget, ga, reference)
    _check_budget(budget, src)
    _check_ga(ga, src)
    _check_space(space, reference, src)
    _check_reference(preset, src)
    return preset


def _fail(src: str, message: str):
    raise ConfigError(f"{src}: {message}")


def _table(raw: Mapping, name: str, src: str) -> Mapping:
    t = raw.get(name, {})
    if not isinstance(t, Mapping):
        _fail(src, f"{name} must be a table; write it as [{name}]")
    return t


def _check_keys(table: Mapping, known: set, prefix: str, src: str) -> None:
    for k in table:
        if k not in known:
            _fail(src, f"unknown key {prefix}{k}; known keys: {', '.join(sorted(known))}")


def _typed(value: Any, kind: type, key: str, src: str):
    """Check a TOML value's type; ints are accepted (and converted) where floats are expected."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and ok and not math.isfinite(value):
        ok = False
    if not ok:
        wanted = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string"}[kind]
        _fail(src, f"{key} = {value!r} must be {wanted}; fix its value")
    return value


def _dataclass(cls, table: Mapping, section: str, src: str):
    flds = {f.name: f for f in fields(cls)}
    _check_keys(table, set(flds), f"{section}.", src)
    kwargs = {}
    for name, f in flds.items():
        if name in table:
            kind = {"int": int, "float": float, "bool": bool, "str": str}[
                f.type if isinstance(f.type, str) else f.type.__name__]
            kwargs[name] = _typed(table[name], kind, f"{section}.{name}", src)
        elif f.default is MISSING:
            _fail(src, f"missing key {section}.{name}; add it to [{section}]")
    return cls(**kwargs)


def _gene(name: str, table: Any, src: str) -> GeneSpec:
    key = f"space.{name}"
    if table is None:
        _fail(src, f"missing gene {key}; add {key} = {{ min = ..., max = ... }} or {{ choices = [...] }}")
    if not isinstance(table, Mapping):
        _fail(src, f"{key} must be a table like {{ min = ..., max = ... }} or {{ choices = [...] }}")
    _check_keys(table, set(GENE_KEYS), f"{key}.", src)
    kind = int if name in INT_GENES else float
    log = _typed(table.get("log", name == "learning_rate"), bool, f"{key}.log", src)
    if log != (name == "learning_rate"):
        _fail(src, f"{key}.log: only learning_rate is searched in log space (log = true); remove or fix it")
    if "choices" in table:
        if any(k in table for k in ("min", "max", "step")):
            _fail(src, f"{key}: give either choices or min/max, not both")
        choices = table["choices"]
        if not isinstance(choices, list) or not choices:
            _fail(src, f"{key}.choices must be a non-empty list of numbers; add at least one value")
        values = tuple(_typed(v, kind, f"{key}.choices", src) for v in choices)
        spec = GeneSpec(name, choices=values, log=log, integer=name in INT_GENES)
    else:
        for k in ("min", "max"):
            if k not in table:
                _fail(src, f"missing key {key}.{k}; give min and max, or choices")
        if "step" in table and name != "n_embd":
            _fail(src, f"{key}.step: only n_embd takes a step; remove it or use choices")
        step = _typed(table["step"], int, f"{key}.step", src) if "step" in table else None
        lo, hi = _typed(table["min"], kind, f"{key}.min", src), _typed(table["max"], kind, f"{key}.max", src)
        if lo > hi:
            _fail(src, f"{key}: empty range, min {lo} > max {hi}; make min <= max")
        if step is not None and step < 1:
            _fail(src, f"{key}.step = {step} must be >= 1")
        spec = GeneSpec(name, min=lo, max=hi, step=step, log=log, integer=name in INT_GENES)
    count = len(spec.choices) if spec.choices is not None else (spec.max - spec.min) // (spec.step or 1) + 1
    if spec.discrete and count > 1_000_000:
        _fail(src, f"{key} allows {count} values; narrow it or add a step")
    if name == "dropout" and not (0.0 <= spec.low and spec.high < 1.0):
        _fail(src, f"{key} must lie in [0, 1); fix its bounds")
    if name == "learning_rate" and spec.low <= 0:
        _fail(src, f"{key} must be > 0; fix its bounds")
    if name in INT_GENES and spec.low < 1:
        _fail(src, f"{key} must be >= 1; fix its bounds")
    return spec


def _check_space(space: SpaceConfig, reference: "Reference", src: str) -> None:
    """nanoGPT's constraint can be met: some n_embd is a multiple of some n_head
    (a gene the space leaves out takes the reference's value)."""
    heads = space.n_head.values() if "n_head" in space.names else (reference.n_head,)
    embds = space.n_embd.values() if "n_embd" in space.names else (reference.n_embd,)
    if len(heads) * len(embds) <= 1_000_000 and not any(e % h == 0 for h in heads for e in embds):
        _fail(src, "no n_embd in space.n_embd is a multiple of an n_head in space.n_head; add one")


def _check_limits(obj, section: str, src: str) -> None:
    """Every size key of ``section`` at most its SIZE_LIMITS value."""
    for f in fields(obj):
        key, value = f"{section}.{f.name}", getattr(obj, f.name)
        limit = SIZE_LIMITS.get(key)
        if limit is not None and value > limit:
            _fail(src, f"{key} = {value:,} is larger than the limit of {limit:,.0f}; lower it")


def estimate_search_bytes(ga: GAConfig) -> dict[str, int]:
    """Rough peak memory of the search itself, in bytes, by the key that drives each part.

    Females: parents and offspring, each a DEAP tree of at most ``tree_max_size``
    nodes (about 200 bytes a node with its scores); males: every son candidate of a
    generation and the generation-0 archive seed (about 4 KiB each with its genome,
    fitness and record). An estimate for refusing absurd presets, not a guarantee.
    """
    return {"ga.n_females": 2 * ga.n_females * ga.tree_max_size * 200,
            "ga.n_males": ga.n_males * max(1, ga.son_candidates) * 4096,
            "ga.seed_archive": ga.seed_archive * 4096}


def _check_budget(b: BudgetConfig, src: str) -> None:
    _check_limits(b, "budget", src)
    for k in ("early_iters", "full_iters", "eval_interval", "eval_batches", "block_size", "batch_size"):
        if getattr(b, k) < 1:
            _fail(src, f"budget.{k} = {getattr(b, k)} must be >= 1")
    if b.warmup_iters < 0:
        _fail(src, f"budget.warmup_iters = {b.warmup_iters} must be >= 0")
    if b.eval_timeout_s < 0:
        _fail(src, f"budget.eval_timeout_s = {b.eval_timeout_s} must be >= 0 (0: derived from the budget)")
    if b.early_iters >= b.full_iters:
        _fail(src, f"budget.early_iters = {b.early_iters} must be < budget.full_iters = {b.full_iters}")
    if b.warmup_iters >= b.full_iters:
        _fail(src, f"budget.warmup_iters = {b.warmup_iters} must be < budget.full_iters = {b.full_iters}")
    # An early curve must be an exact prefix of the full curve with at least the
    # 4 evaluations (steps 0, i, 2i, 3i) the predictor's smallest prefix uses.
    for k in ("early_iters", "full_iters"):
        if getattr(b, k) % b.eval_interval:
            _fail(src, f"budget.{k} = {getattr(b, k)} must be a multiple of budget.eval_interval = {b.eval_interval}")
    if b.early_iters < 3 * b.eval_interval:
        _fail(src, f"budget.early_iters = {b.early_iters} must be >= 3 * budget.eval_interval "
                   f"(4 early evaluations); lower eval_interval or raise early_iters")
    if b.full_iters // b.eval_interval + 1 > MAX_CURVE_POINTS:
        _fail(src, f"budget.full_iters / budget.eval_interval = {b.full_iters // b.eval_interval:,} evaluations "
                   f"of the validation loss per run, more than the limit of {MAX_CURVE_POINTS:,}; "
                   "raise eval_interval")


def _check_ga(ga: GAConfig, src: str) -> None:
    def need(ok: bool, message: str):
        if not ok:
            _fail(src, message)

    _check_limits(ga, "ga", src)
    need(ga.n_males >= 2, f"ga.n_males = {ga.n_males} must be >= 2")
    need(ga.n_females >= 2, f"ga.n_females = {ga.n_females} must be >= 2")
    need(0 <= ga.male_elites < ga.n_males,
         f"ga.male_elites = {ga.male_elites} must be in 0..n_males-1 ({ga.n_males - 1})")
    need(0 <= ga.female_elites < ga.n_females,
         f"ga.female_elites = {ga.female_elites} must be in 0..n_females-1 ({ga.n_females - 1})")
    need(0 <= ga.promote_k <= ga.n_males, f"ga.promote_k = {ga.promote_k} must be in 0..ga.n_males ({ga.n_males})")
    need(ga.seed_archive >= 0, f"ga.seed_archive = {ga.seed_archive} must be >= 0")
    for k in ("mutation_sigma", "guided_step"):
        need(getattr(ga, k) > 0, f"ga.{k} = {getattr(ga, k)} must be > 0")
    need(ga.son_candidates >= 1, f"ga.son_candidates = {ga.son_candidates} must be >= 1")
    for k in ("p_guided", "cx_prob", "mut_prob"):
        need(0 <= getattr(ga, k) <= 1, f"ga.{k} = {getattr(ga, k)} must be a probability in [0, 1]")
    need(ga.cohort in ("call", "run"), f"ga.cohort = {ga.cohort!r} must be 'call' or 'run'")
    need(ga.son_ranker in SON_RANKERS,
         f"ga.son_ranker = {ga.son_ranker!r} must be one of {', '.join(map(repr, SON_RANKERS))}")
    # Upper bounds: a snapshot's trees are parsed back with a bounded nesting depth
    # (gp.MAX_PARSE_DEPTH) and text length, so a run must never evolve a tree it cannot reload.
    need(ga.tree_max_depth >= 1, f"ga.tree_max_depth = {ga.tree_max_depth} must be >= 1")
    need(ga.tree_max_size >= 1, f"ga.tree_max_size = {ga.tree_max_size} must be >= 1")
    need(ga.tree_max_depth <= MAX_TREE_DEPTH, f"ga.tree_max_depth = {ga.tree_max_depth} must be <= {MAX_TREE_DEPTH}")
    need(ga.tree_max_size <= MAX_TREE_SIZE, f"ga.tree_max_size = {ga.tree_max_size} must be <= {MAX_TREE_SIZE}")
    need(ga.female_steps >= 1, f"ga.female_steps = {ga.female_steps} must be >= 1")
    need(1 <= ga.top_females <= ga.n_females,
         f"ga.top_females = {ga.top_females} must be in 1..ga.n_females ({ga.n_females})")
    need(1 <= ga.male_tournament <= ga.n_males, f"ga.male_tournament = {ga.male_tournament} must be in 1..ga.n_males")
    need(1 <= ga.female_tournament <= ga.n_females,
         f"ga.female_tournament = {ga.female_tournament} must be in 1..ga.n_females")
    need(1 <= ga.parsimony_size <= 2, f"ga.parsimony_size = {ga.parsimony_size} must be in [1, 2]")
    parts = estimate_search_bytes(ga)
    if sum(parts.values()) > MAX_SEARCH_BYTES:
        key = max(parts, key=parts.get)
        _fail(src, f"the search would need about {sum(parts.values()) / 2**30:.0f} GiB of memory, most of it "
                   f"for {key} = {getattr(ga, key.split('.')[1]):,} (limit {MAX_SEARCH_BYTES / 2**30:.0f} GiB); "
                   f"lower {key}")


def _check_reference(preset: Preset, src: str) -> None:
    ref, space = preset.reference, preset.space
    for g in space.names:
        v, spec = getattr(ref, g), space.gene(g)
        if not spec.contains(v):
            allowed = f"one of {list(spec.values())}" if spec.discrete else f"in [{spec.low}, {spec.high}]"
            _fail(src, f"reference.{g} = {v} is outside space.{g} ({allowed}); change one of them")
        if g in INT_GENES and v < 1:
            _fail(src, f"reference.{g} = {v} must be >= 1")
    if ref.n_embd % ref.n_head:
        _fail(src, f"reference.n_embd = {ref.n_embd} is not a multiple of reference.n_head = {ref.n_head}")
    need = estimate_memory_bytes(largest_architecture(space, ref), preset.budget)
    if need > MAX_MEMORY_BYTES:
        _fail(src, f"the largest architecture in the space needs about {need / 2**30:.0f} GiB "
                   f"(limit {MAX_MEMORY_BYTES / 2**30:.0f} GiB); shrink space or budget.batch_size/block_size")


# ---------------------------------------------------------------- sizes

def non_embedding_params(n_layer: int, n_embd: int, vocab_size: int = 65) -> int:
    """nanoGPT's ``get_num_params(non_embedding=True)`` for ``bias=False``.

    Per block: attention qkv + projection 4*d^2, MLP 8*d^2, two LayerNorm
    weights 2*d; then the final LayerNorm d and the token embedding V*d (tied
    with the output head, so counted once). Position embeddings are excluded,
    so block_size does not enter.
    """
    return n_layer * (12 * n_embd**2 + 2 * n_embd) + n_embd + vocab_size * n_embd


def training_flops_per_token(n_layer: int, n_head: int, n_embd: int, block_size: int,
                             vocab_size: int = 65) -> int:
    """Training FLOPs per token (forward and backward), nanoGPT's ``estimate_mfu``:

        6 N + 12 L H Q T,   N = non_embedding_params, Q = n_embd / n_head (so H Q = n_embd),
                            T = block_size

    6 N is the weights' multiply-adds (2 forward, 4 backward per parameter); the
    second term is attention's scores and weighted sum over the T positions.
    """
    head_size = n_embd // n_head
    return 6 * non_embedding_params(n_layer, n_embd, vocab_size) + 12 * n_layer * n_head * head_size * block_size


def training_flops_per_step(arch: Mapping, budget: BudgetConfig, vocab_size: int = 65) -> int:
    """Training FLOPs of one optimizer step of ``arch``: per token times batch_size * block_size."""
    per_token = training_flops_per_token(int(arch["n_layer"]), int(arch["n_head"]), int(arch["n_embd"]),
                                         budget.block_size, vocab_size)
    return per_token * budget.batch_size * budget.block_size


def flops_per_token(arch: Mapping, block_size: int, vocab_size: int = 65) -> int:
    """``training_flops_per_token`` of an architecture mapping (n_head does not change it)."""
    return training_flops_per_token(int(arch["n_layer"]), int(arch.get("n_head", 1)), int(arch["n_embd"]),
                                    int(block_size), vocab_size)


# The derived per-evaluation time limit (eval_time_limit): a floor for start-up (spawning
# a worker, importing torch, preparing data, CUDA initialisation, the inference measurement)
# and a throughput far below any working run (small models on one loaded CPU thread train at
# about 20 GFLOP/s on the 2-core machine kind; GPUs reach tens to hundreds of TFLOP/s).
EVAL_LIMIT_FLOOR_S = 600.0
SLOWEST_FLOPS_PER_S = {"cpu": 1e9, "cuda": 1e12}


def eval_time_limit(preset: "Preset", device: str = "cpu") -> float:
    """Seconds one evaluation may take before it counts as hung (a recorded failure, its
    worker replaced): ``budget.eval_timeout_s`` when set, else derived from the budget.

    Derived: EVAL_LIMIT_FLOOR_S plus the FLOPs of the largest architecture's full run
    (``full_iters`` steps of ``batch_size * block_size`` tokens, and the evaluations:
    val and train batches at every ``eval_interval``, forward only, a third of a step's
    FLOPs) at SLOWEST_FLOPS_PER_S of ``device`` ("auto": cuda when torch sees a GPU).
    cpu-small: about 16 min on cpu; shakespeare-char: about 5 h on cuda.
    """
    b = preset.budget
    if b.eval_timeout_s > 0:
        return float(b.eval_timeout_s)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    tokens = b.full_iters * b.batch_size * b.block_size
    evals = b.full_iters // b.eval_interval + 1
    eval_tokens = 2 * evals * b.eval_batches * b.batch_size * b.block_size
    largest = largest_architecture(preset.space, preset.reference)
    flops = flops_per_token(largest, b.block_size) * (tokens + eval_tokens / 3)
    return EVAL_LIMIT_FLOOR_S + flops / SLOWEST_FLOPS_PER_S[kind]


def device_memory_bytes(device: str = "auto") -> tuple[int, str]:
    """Memory one evaluation may use on ``device``, and its name: the GPU's total
    memory for cuda (cuda:N), the machine's physical RAM for cpu. ``auto`` is
    cuda when torch sees a GPU. torch is imported only when a GPU may be meant.
    """
    if device != "cpu":
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index
            props = torch.cuda.get_device_properties(index)
            return int(props.total_memory), f"{props.name} (cuda:{index})"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no limit we can read
        return MAX_MEMORY_BYTES, "this machine"
    return int(ram), "CPU RAM"


def check_fits(arch: Mapping, budget: BudgetConfig, device: str = "auto", concurrent: int = 1,
               what: str = "the largest architecture in the space") -> None:
    """Refuse, before anything trains, a model whose estimated training memory
    (estimate_memory_bytes, times the evaluations that share the device) exceeds
    the device's memory. ConfigError with the estimate and the limit."""
    need = estimate_memory_bytes(arch, budget) * max(1, concurrent)
    limit, name = device_memory_bytes(device)
    if need > limit:
        shape = f"n_layer={arch['n_layer']} n_head={arch['n_head']} n_embd={arch['n_embd']}"
        times = f" x {concurrent} concurrent evaluations" if concurrent > 1 else ""
        raise ConfigError(
            f"{what} ({shape}, batch {budget.batch_size} x block {budget.block_size}) needs about "
            f"{need / 2**30:.1f} GiB to train{times}, more than the {limit / 2**30:.1f} GiB of {name}; "
            "shrink the space (--set space.n_embd.max=...), batch_size or block_size, or use fewer workers")


def largest_architecture(space: SpaceConfig, reference: "Reference") -> dict:
    """The corner of the space that needs the most memory (every size gene at its maximum;
    a size the space leaves out at the reference's value)."""
    return {g: int(space.gene(g).high) if g in space.names else int(getattr(reference, g))
            for g in ("n_layer", "n_head", "n_embd")}


def estimate_memory_bytes(arch: Mapping, budget: BudgetConfig, vocab_size: int = 65) -> int:
    """Rough peak training memory of one architecture, fp32 with AdamW, in bytes.

    With L layers, d = n_embd, H heads, B batch, T block, V vocabulary and P
    all parameters (non-embedding + T*d position embeddings):

        16 * P                  weights, gradients, Adam's two moments (4 bytes each)
      + 68 * B * T * d * L      activations kept for backward (Korthikanti et al.
                                2022: 34 bytes per B*T*d per layer at 16 bits, x2 for fp32)
      +  8 * B * H * T^2 * L    attention scores and softmax (unfused attention path)
      + 12 * B * T * V          logits, their softmax and gradient

    An estimate for refusing absurd presets, not a guarantee.
    """
    L, d, H = int(arch["n_layer"]), int(arch["n_embd"]), int(arch["n_head"])
    B, T, V = budget.batch_size, budget.block_size, vocab_size
    params = non_embedding_params(L, d, V) + T * d
    return 16 * params + 68 * B * T * d * L + 8 * B * H * T * T * L + 12 * B * T * V


def hyperparameter_features(arch: Mapping, vocab_size: int = 65) -> dict[str, float]:
    """The male's hyperparameters as the predictor sees them (a curve's config: search.females reads these keys).

    n_params is nanoGPT's non-embedding count (see non_embedding_params).
    """
    return {
        "learning_rate": float(arch["learning_rate"]),
        "dropout": float(arch["dropout"]),
        "n_layer": float(arch["n_layer"]),
        "n_head": float(arch["n_head"]),
        "n_embd": float(arch["n_embd"]),
        "n_params": float(non_embedding_params(int(arch["n_layer"]), int(arch["n_embd"]), vocab_size)),
    }
