"""The standard NAS methods gpnas is compared against, through the same ledger.

Each method is a ``loop.Search`` with its own ``start`` (generation 0) and
``step`` (one generation); it receives a ``ledger.Ledger`` as the engine does
(composition: no method inherits the engine). So tasks and archive keys, the
shared cache, charging each distinct evaluation once in the task's cost unit,
the budget a run never overspends (an evaluation that does not fit is not
run), snapshots and resume, the hall of fame, the promotions list and the
report are the same for every method and mode, and a method's compute is
counted exactly as a mode's is; training or a table is the ledger's business.

==========================  =====================================================
baseline                    the preset's reference architecture trained fully,
                            once (generation 0 is the whole method)
random                      each generation trains ``batch`` random
                            architectures fully
successive-halving          Hyperband (Li et al. 2018, eta = 3): generation g
                            runs bracket s = s_max - (g - 1) mod (s_max + 1),
                            successive halving of n_s random architectures
                            from resource R eta^-s up to R (the full run), the
                            best 1/eta of each rung resumed from its checkpoint
                            (freeze-thaw) to the next; so the brackets cycle
                            from the most exploratory to plain full training
regularized-evolution       aging evolution (Real et al. 2019) on full
                            training: each cycle samples S of the population
                            P, mutates one gene of the best of the sample,
                            trains that one child, and the oldest member dies
==========================  =====================================================

Their parameters are derived from the preset (``MethodConfig.from_preset``),
so a preset describes one search problem for every method.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from gpnas.search.loop import WORST, Search, add_work
from gpnas.search.males import encode, sample_genome
from gpnas.search.space import as_space
from gpnas.search.state import State

ETA = 3  # successive halving keeps the best 1/ETA of each rung (Hyperband's default)


@dataclass(frozen=True)
class MethodConfig:
    """What the standard methods need beyond the preset's budget."""

    batch: int             # random search: architectures trained per generation
    population: int        # regularized evolution: P, architectures alive at once
    sample: int            # regularized evolution: S, tournament size of a parent choice
    children: int          # regularized evolution: cycles (one child each) per generation
    mutation_sigma: float  # regularized evolution: a continuous gene's mutation, in units of its range
    eta: int = ETA

    @classmethod
    def from_preset(cls, preset) -> "MethodConfig":
        """Population and batch sizes of the preset's GA, so every method sees the
        same problem size: a generation of regularized evolution trains as many
        models fully as a generation of the engine promotes."""
        ga = preset.ga
        return cls(batch=ga.n_males, population=ga.n_males, sample=min(ga.male_tournament, ga.n_males),
                   children=max(1, ga.promote_k + int(ga.calibration)), mutation_sigma=ga.mutation_sigma)


# ------------------------------------------------------- Hyperband, pure

@dataclass(frozen=True)
class Bracket:
    """One Hyperband bracket: ``counts[i]`` architectures trained to ``steps[i]``."""

    s: int
    counts: tuple[int, ...]
    steps: tuple[int, ...]

    def cost(self, resume: bool = True) -> int:
        """Training steps the bracket spends when none fails: with freeze-thaw each rung
        pays only the steps it adds (``resume``), in the paper every rung trains from scratch."""
        total, below = 0, 0
        for n, r in zip(self.counts, self.steps):
            total += n * (r - below if resume else r)
            below = r
        return total


def hyperband_brackets(early_iters: int, full_iters: int, eval_interval: int, eta: int = ETA) -> list[Bracket]:
    """Hyperband's brackets (Li et al. 2018, Algorithm 1), most exploratory first.

    Resources are training steps: R = ``full_iters`` is the maximum, the
    smallest is about ``early_iters`` (s_max = floor(log_eta(full / early))).
    Bracket s starts n = ceil((s_max + 1) eta^s / (s + 1)) architectures at
    r = R eta^-s; rung i trains floor(n eta^-i) of them to r eta^i steps (rounded
    to a multiple of ``eval_interval``, so a rung's curve is the exact prefix of
    the full one).

    >>> [(b.counts, b.steps) for b in hyperband_brackets(30, 300, 10)]
    [((9, 3, 1), (30, 100, 300)), ((5, 1), (100, 300)), ((3,), (300,))]
    """
    s_max = int(math.floor(math.log(full_iters / early_iters) / math.log(eta) + 1e-9))
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) * eta ** s / (s + 1))
        counts, steps = [], []
        for i in range(s + 1):
            raw = full_iters * eta ** (i - s)
            step = min(full_iters, max(eval_interval, eval_interval * round(raw / eval_interval)))
            if steps and step <= steps[-1]:  # rounding merged two rungs: keep the later
                counts.pop()
                steps.pop()
            counts.append(max(1, int(n * eta ** -i + 1e-9)))
            steps.append(step)
        brackets.append(Bracket(s, tuple(counts), tuple(steps)))
    return brackets


def survivors(losses: Sequence[float], keep: int) -> list[int]:
    """Indices of the best ``keep`` losses, best first (ties: lower index); NaN and
    inf (failed or diverged runs) never survive."""
    finite = [i for i, x in enumerate(losses) if math.isfinite(x)]
    return sorted(finite, key=lambda i: (losses[i], i))[:keep]


def successive_halving(counts: Sequence[int], losses_at: Callable[[list[int], int], list[float]]) -> list[list[int]]:
    """One bracket's successive halving: which of ``counts[0]`` configurations ran on each rung.

    ``losses_at(members, rung)`` trains ``members`` (indices) to rung ``rung``
    and returns their losses there; the best ``counts[rung + 1]`` go on. The
    last list holds the configurations trained on the top rung (empty if every
    one failed before).
    """
    members, ladder = list(range(counts[0])), []
    for rung in range(len(counts)):
        if not members:
            break
        ladder.append(members)
        losses = losses_at(members, rung)
        if rung < len(counts) - 1:
            members = [members[j] for j in survivors(losses, counts[rung + 1])]
    return ladder


def mut_one_gene(genome, space, rng: random.Random, sigma: float):
    """A copy of ``genome`` with one gene mutated (Real et al.'s mutation: one
    change per child; ``Space.mutate_one``): the gene drawn uniformly among the
    movable ones, a discrete gene takes another allowed value, a continuous one
    moves by N(0, sigma) of its range. A space of one config returns the parent."""
    return as_space(space).mutate_one(genome, rng, sigma)


# ------------------------------------------------------------------ methods

class Method(Search):
    """A standard method: the ledger's evaluation, charging and reporting, its own steps."""

    name = ""

    def __init__(self, preset, ledger, snapshots=None, callbacks=()):
        super().__init__(preset, ledger, snapshots, callbacks)
        self.config = MethodConfig.from_preset(preset)

    def start(self) -> tuple[State, dict]:
        """Generation 0: nothing trained yet; subclasses may train here."""
        rng = random.Random(self.seed)
        return State(generation=0, males=[], females=[], rng_state=rng.getstate()), self.no_work()

    @staticmethod
    def no_work() -> dict:
        return {"evaluated": 0, "cache_hits": 0, "failed": {}}

    def train_fully(self, state: State, genomes: list, work: dict) -> list:
        """Train the genomes from scratch to the full budget (as far as the budget
        allows); returns the ones that completed. Adds to ``work``."""
        add_work(work, self.ledger.evaluate(state, [self.ledger.request(g, self.ledger.full) for g in genomes]))
        return [g for g in genomes if self.ledger.record_complete(state, g)]

    def final_loss(self, state: State, g) -> float:
        """True final validation loss of a genome this run trained fully, else WORST."""
        loss = self.ledger.final_loss(state, g)
        return WORST if loss is None else loss


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
    """Hyperband: successive halving inside brackets that cycle over generations.

    Generation g runs bracket ``brackets[(g - 1) % len(brackets)]`` of
    ``hyperband_brackets`` (eta 3): its random architectures start on its
    first rung, and the best of each rung resume from their rung checkpoint
    (freeze-thaw) to the next, paying only the steps they add. One cycle of
    brackets is one Hyperband iteration; a budget ends the run wherever it is.
    """

    name = "successive-halving"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        task = self.ledger.task
        self.brackets = hyperband_brackets(task.early_steps, task.full_steps, task.eval_interval, self.config.eta)

    def bracket(self, generation: int) -> Bracket:
        return self.brackets[(generation - 1) % len(self.brackets)]

    def rung_request(self, g, steps: tuple, rung: int):
        """Rung ``rung`` of ``g``: resumed from the rung below where its state was kept."""
        if rung == 0:
            return self.ledger.request(g, steps[0])
        below = self.ledger.key(g, steps[rung - 1])
        return self.ledger.request(g, steps[rung], steps[rung - 1] if self.ledger.task.resumable(below) else None)

    def rung_loss(self, state: State, key: str) -> float:
        """Validation loss where the rung stopped; inf if it failed, diverged or did not run."""
        record = self.ledger.archive.get(key) if key in state.charged else None
        if record is None or record.status not in ("early", "complete"):
            return math.inf
        return float(record.result["curve"]["val_loss"][-1])

    def step(self, state: State, rng: random.Random) -> dict:
        work = self.no_work()
        bracket = self.bracket(state.generation)
        genomes = [sample_genome(self.space, rng) for _ in range(bracket.counts[0])]

        def losses_at(members, rung):
            requests = [self.rung_request(genomes[i], bracket.steps, rung) for i in members]
            add_work(work, self.ledger.evaluate(state, requests))
            return [self.rung_loss(state, r.key) for r in requests]

        ladder = successive_halving(bracket.counts, losses_at)
        done = []
        if len(ladder) == len(bracket.counts):
            done = [genomes[i] for i in ladder[-1] if self.ledger.record_complete(state, genomes[i])]
        return self.log_row(state, work, done, None)


class RegularizedEvolution(Method):
    """Aging evolution (Real et al. 2019).

    ``state.males`` is the population P, oldest first. Each cycle samples S
    members at random, copies the best of the sample (lowest true final val
    loss) and mutates one gene (``mut_one_gene``), trains that one child fully,
    appends it and removes the oldest member; the next cycle sees the new
    population. A generation is ``children`` cycles (as many full runs as a
    generation of the engine promotes), a unit of logging only.
    """

    name = "regularized-evolution"

    def start(self) -> tuple[State, dict]:
        rng = random.Random(self.seed)
        population = [sample_genome(self.space, rng) for _ in range(self.config.population)]
        state = State(generation=0, males=population, females=[], rng_state=rng.getstate())
        work = self.no_work()
        self.train_fully(state, population, work)
        state.males = [g for g in population if self.ledger.key(g, self.ledger.full) in state.charged]
        return state, work

    def step(self, state: State, rng: random.Random) -> dict:
        work = self.no_work()
        done = []
        for _ in range(self.config.children):
            population = state.males
            if not population:  # the budget did not even pay for the first population
                state.exhausted = True
                break
            sample = rng.sample(range(len(population)), min(self.config.sample, len(population)))
            parent = min(sample, key=lambda i: (self.final_loss(state, population[i]), i))
            child = mut_one_gene(population[parent], self.space, rng, self.config.mutation_sigma)
            done += self.train_fully(state, [child], work)
            if self.ledger.key(child, self.ledger.full) in state.charged:
                state.males = aged(population, [child])
            if state.exhausted:
                break
        return self.log_row(state, work, done, None)


def aged(population: list, born: list) -> list:
    """The population after ``born`` join it: as many of the oldest (first) leave."""
    return population[len(born):] + born if len(born) <= len(population) else born[-len(population):]


METHODS = {cls.name: cls for cls in (Baseline, RandomSearch, SuccessiveHalving, RegularizedEvolution)}
