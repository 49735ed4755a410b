"""The standard NAS methods gpnas is compared against, on the engine's machinery.

Each method is an ``Evolution`` that replaces only ``start`` (generation 0)
and ``step`` (one generation). Everything else is the engine's own: tasks and
archive keys, the shared cache, charging each distinct evaluation once, the
token budget a run never overspends (a task that does not fit is not run),
snapshots and resume, the hall of fame, the promotions list and the report.
So a method's compute is counted exactly as a mode's is.

==========================  =====================================================
baseline                    the preset's reference architecture trained fully,
                            once (generation 0 is the whole method)
random                      each generation trains ``batch`` random
                            architectures fully
successive-halving          each generation is one bracket: eta^(R-1) random
                            architectures on the first rung, the best 1/eta of
                            each rung resumed from its checkpoint (freeze-thaw)
                            to the next; rungs grow geometrically from the
                            early budget to the full one
regularized-evolution       aging evolution (Real et al. 2019) on full
                            training: population P, sample S, mutate the best
                            of the sample, the oldest dies
==========================  =====================================================

Their parameters are derived from the preset (``MethodConfig.from_preset``),
so a preset describes one search problem for every method.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from gpnas.search.engine import WORST, Evolution, Mode, State, add_work
from gpnas.search.males import encode, mut_genome, sample_genome

ETA = 3  # successive halving keeps the best 1/ETA of each rung (Hyperband's default)


@dataclass(frozen=True)
class MethodConfig:
    """What the standard methods need beyond the preset's budget."""

    batch: int             # random search: architectures trained per generation
    population: int        # regularized evolution: P, architectures alive at once
    sample: int            # regularized evolution: S, tournament size of a parent choice
    children: int          # regularized evolution: children trained per generation
    mutation_sigma: float  # regularized evolution: mut_genome's scale
    eta: int = ETA

    @classmethod
    def from_preset(cls, preset) -> "MethodConfig":
        """Population and batch sizes of the preset's GA, so every method sees the
        same problem size: a generation of regularized evolution trains as many
        models fully as a generation of the engine promotes."""
        ga = preset.ga
        return cls(batch=ga.n_males, population=ga.n_males, sample=min(ga.male_tournament, ga.n_males),
                   children=max(1, ga.promote_k + int(ga.calibration)), mutation_sigma=ga.mutation_sigma)


# ------------------------------------------------------- successive halving, pure

def rung_steps(early_iters: int, full_iters: int, eval_interval: int, eta: int = ETA) -> list[int]:
    """Training steps of each rung: from ``early_iters`` to ``full_iters``, growing
    about eta-fold, each a multiple of ``eval_interval`` (so a rung's curve is the
    exact prefix of the full curve). At least two rungs.

    >>> rung_steps(40, 400, 10)
    [40, 130, 400]
    """
    n = max(2, round(math.log(full_iters / early_iters) / math.log(eta)) + 1)
    steps = []
    for i in range(n):
        raw = early_iters * (full_iters / early_iters) ** (i / (n - 1))
        step = min(full_iters, max(early_iters, eval_interval * round(raw / eval_interval)))
        if not steps or step > steps[-1]:
            steps.append(step)
    steps[-1] = full_iters
    return steps


def survivors(losses: Sequence[float], eta: int = ETA) -> list[int]:
    """Indices of the best ``max(1, len // eta)`` losses, best first (ties: lower
    index); NaN and inf (failed or diverged runs) never survive."""
    finite = [i for i, x in enumerate(losses) if math.isfinite(x)]
    keep = max(1, len(losses) // eta)
    return sorted(finite, key=lambda i: (losses[i], i))[:keep]


def successive_halving(n: int, n_rungs: int, losses_at: Callable[[list[int], int], list[float]],
                       eta: int = ETA) -> list[list[int]]:
    """One bracket: which of ``n`` configurations ran on each rung.

    ``losses_at(members, rung)`` trains ``members`` (indices) to ``rung`` and
    returns their losses there; the best 1/eta go on to the next rung. The
    last list holds the configurations trained on the top rung (empty if every
    one failed before).
    """
    members, ladder = list(range(n)), []
    for rung in range(n_rungs):
        if not members:
            break
        ladder.append(members)
        losses = losses_at(members, rung)
        if rung < n_rungs - 1:
            members = [members[j] for j in survivors(losses, eta)]
    return ladder


# ------------------------------------------------------------------ methods

class Method(Evolution):
    """A standard method: the engine's evaluation, charging and reporting, its own loop."""

    name = ""

    def __init__(self, preset, mode: str, *args, **kwargs):
        assert mode == self.name, (mode, self.name)
        super().__init__(preset, Mode(self.name, females=False, male_fitness="full", breeding="none"),
                         *args, **kwargs)
        self.config = MethodConfig.from_preset(preset)

    def start(self) -> tuple[State, dict]:
        """Generation 0: nothing trained yet; subclasses may train here."""
        rng = random.Random(self.seed)
        return State(generation=0, males=[], females=[], rng_state=rng.getstate()), self.no_work()

    @staticmethod
    def no_work() -> dict:
        return {"evaluated": 0, "cache_hits": 0, "failed": 0, "failure": ""}

    def train_fully(self, state: State, genomes: list, work: dict) -> list:
        """Train the genomes from scratch to the full budget (as far as the budget
        allows); returns the ones that completed. Adds to ``work``."""
        more = self.evaluate(state, [self.task(g, self.budget.full_iters) for g in genomes])
        add_work(work, more)
        done = []
        for g in genomes:
            before = len(state.promotions)
            self.record_complete(state, g, predicted=None)
            if len(state.promotions) > before:
                done.append(g)
        return done

    def final_loss(self, state: State, g) -> float:
        """True final validation loss of a genome this run trained fully, else WORST."""
        key = self.key(g, self.budget.full_iters)
        record = self.archive.get(key) if key in state.charged else None
        if record is None or record.status != "complete":
            return WORST
        return float(record.result["curve"]["val_loss"][-1])


class Baseline(Method):
    """The preset's reference architecture, trained fully once."""

    name = "baseline"

    def start(self) -> tuple[State, dict]:
        state, work = super().start()
        self.train_fully(state, [encode(self.preset.reference.as_dict(), self.space)], work)
        return state, work

    def run(self, generations: int) -> State:
        """Generation 0 is the whole method; more generations would add nothing."""
        return super().run(0)


class RandomSearch(Method):
    """Random architectures, each trained fully, until the budget is spent."""

    name = "random"

    def step(self, state: State, rng: random.Random) -> dict:
        work = self.no_work()
        genomes = [sample_genome(self.space, rng) for _ in range(self.config.batch)]
        done = self.train_fully(state, genomes, work)
        return self.log_row(state, work, done, None)


class SuccessiveHalving(Method):
    """Brackets of successive halving (the most aggressive Hyperband bracket).

    Rungs run from the early budget to the full one (``rung_steps``); a bracket
    starts eta^(R-1) random architectures, so one reaches the top rung when
    none fails. A promoted architecture resumes from its rung checkpoint and
    pays only the steps it adds.
    """

    name = "successive-halving"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        b = self.budget
        self.rungs = rung_steps(b.early_iters, b.full_iters, b.eval_interval, self.config.eta)
        self.bracket_size = self.config.eta ** (len(self.rungs) - 1)

    def rung_task(self, g, rung: int):
        if rung == 0:
            return self.task(g, self.rungs[0])
        below = self.checkpoints_dir / f"{self.key(g, self.rungs[rung - 1])}.pt"
        return self.task(g, self.rungs[rung], str(below) if below.exists() else None)

    def resumed_at(self, task) -> int:
        return self.rungs[self.rungs.index(task.stop_at) - 1] if task.resume_from else 0

    def rung_loss(self, state: State, key: str) -> float:
        """Validation loss where the rung stopped; inf if it failed, diverged or did not run."""
        record = self.archive.get(key) if key in state.charged else None
        if record is None or record.status not in ("early", "complete"):
            return math.inf
        return float(record.result["curve"]["val_loss"][-1])

    def step(self, state: State, rng: random.Random) -> dict:
        work = self.no_work()
        genomes = [sample_genome(self.space, rng) for _ in range(self.bracket_size)]

        def losses_at(members, rung):
            tasks = [self.rung_task(genomes[i], rung) for i in members]
            more = self.evaluate(state, tasks)
            add_work(work, more)
            return [self.rung_loss(state, t.key) for t in tasks]

        ladder = successive_halving(len(genomes), len(self.rungs), losses_at, self.config.eta)
        done = []
        if len(ladder) == len(self.rungs):
            for i in ladder[-1]:
                before = len(state.promotions)
                self.record_complete(state, genomes[i], predicted=None)
                if len(state.promotions) > before:
                    done.append(genomes[i])
        return self.log_row(state, work, done, None)


class RegularizedEvolution(Method):
    """Aging evolution (Real et al. 2019), batch-synchronous.

    ``state.males`` is the population, oldest first. Each generation makes
    ``children`` children, each by sampling S members at random and mutating
    the best of them (``mut_genome``); the children train fully, join
    the population, and as many of the oldest members are removed. Fitness is
    the true final validation loss, looked up in the archive.
    """

    name = "regularized-evolution"

    def start(self) -> tuple[State, dict]:
        rng = random.Random(self.seed)
        population = [sample_genome(self.space, rng) for _ in range(self.config.population)]
        state = State(generation=0, males=population, females=[], rng_state=rng.getstate())
        work = self.no_work()
        self.train_fully(state, population, work)
        state.males = [g for g in population if self.key(g, self.budget.full_iters) in state.charged]
        return state, work

    def step(self, state: State, rng: random.Random) -> dict:
        work = self.no_work()
        population = state.males
        if not population:  # the budget did not even pay for the first population
            state.exhausted = True
            return self.log_row(state, work, [], None)
        losses = [self.final_loss(state, g) for g in population]
        children = []
        for _ in range(self.config.children):
            sample = rng.sample(range(len(population)), min(self.config.sample, len(population)))
            parent = min(sample, key=lambda i: (losses[i], i))
            (child,) = mut_genome(copy.deepcopy(population[parent]), self.space, rng,
                                         self.config.mutation_sigma)
            children.append(child)
        done = self.train_fully(state, children, work)
        born = [c for c in children if self.key(c, self.budget.full_iters) in state.charged]
        state.males = aged(population, born)
        return self.log_row(state, work, done, None)


def aged(population: list, born: list) -> list:
    """The population after ``born`` join it: as many of the oldest (first) leave."""
    return population[len(born):] + born if len(born) <= len(population) else born[-len(population):]


METHODS = {cls.name: cls for cls in (Baseline, RandomSearch, SuccessiveHalving, RegularizedEvolution)}
