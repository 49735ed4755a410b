"""The engine's state and its snapshot form: plain data (genomes as numbers,
trees as strings) that the run folder stores and the engine rebuilds on resume.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from gpnas.errors import FileFormatError
from gpnas.predict import trees
from gpnas.search.individuals import Male


@dataclass
class Compute:
    """Training compute the run was charged: each distinct evaluation once.

    ``flops`` is what budgets and equal-compute comparisons count (training
    FLOPs, ``config.training_flops_per_step``: each architecture costs what its
    size and context cost); ``tokens`` is kept beside it. ``failed`` counts the
    charged evaluations that raised instead of returning a curve.
    """

    steps: int = 0
    tokens: int = 0
    flops: int = 0
    train_seconds: float = 0.0
    evaluations: int = 0
    failed: int = 0

    def charge(self, steps: int, tokens_per_step: int, seconds: float, flops_per_step: int = 0,
               failed: bool = False):
        self.steps += steps
        self.tokens += steps * tokens_per_step
        self.flops += steps * flops_per_step
        self.train_seconds += seconds
        self.evaluations += 1
        self.failed += int(failed)


@dataclass
class State:
    """Everything a snapshot holds: the run can continue from it alone (plus the archive)."""

    generation: int
    males: list
    females: list
    rng_state: tuple
    compute: Compute = field(default_factory=Compute)
    charged: dict = field(default_factory=dict)      # evaluation keys, in the order charged
    hall_of_fame: list = field(default_factory=list)
    logbook: list = field(default_factory=list)
    promotions: list = field(default_factory=list)   # {generation, key, predicted, true}
    mating_stats: dict = field(default_factory=lambda: {"guided": 0, "random": 0, "chose": 0, "tournament": 0})
    failures: list = field(default_factory=list)     # {key, arch, reason}
    sons: list = field(default_factory=list)         # {generation, key, guided, early_loss}: bred sons
    exhausted: bool = False                          # the token budget stopped the run


def state_to_dict(state: State) -> dict:
    version, internal, gauss = state.rng_state
    return {
        "generation": state.generation,
        "males": [[float(x) for x in g] for g in state.males],
        "females": [str(f) for f in state.females],
        "rng_state": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "compute": vars(state.compute),
        "charged": list(state.charged),
        "hall_of_fame": state.hall_of_fame,
        "logbook": state.logbook,
        "promotions": state.promotions,
        "mating_stats": state.mating_stats,
        "failures": state.failures,
        "sons": state.sons,
        "exhausted": state.exhausted,
    }


def state_from_dict(data, pset, where, n_genes: int) -> State:
    """Rebuild a State from snapshot data, checking every field's type.

    Trees are parsed token by token against the primitive set (nothing is
    evaluated); records the report reads later (hall of fame, promotions,
    failures, logbook) must be objects with the fields and types the engine
    writes, so a damaged or hand-made snapshot fails here, with its path.
    """
    def fail(problem):
        raise FileFormatError(f"{where}: {problem}; the snapshot is damaged, delete it to resume "
                              "from the snapshot before")

    def records(name, required: dict) -> list:
        rows = data[name]
        if not isinstance(rows, list):
            fail(f"{name} is not a list")
        for row in rows:
            if not isinstance(row, dict):
                fail(f"an entry of {name} is not an object")
            for field_name, kinds in required.items():
                value = row.get(field_name)
                if not isinstance(value, kinds) or isinstance(value, bool):
                    fail(f"{name}: field {field_name!r} is missing or of the wrong type")
                if isinstance(value, float) and not math.isfinite(value):
                    fail(f"{name}: field {field_name!r} is not finite")
        return list(rows)

    if not isinstance(data, dict):
        fail("not a snapshot object")
    try:
        rng = data["rng_state"]
        internal = tuple(int(x) for x in rng["internal"])
        gauss = rng["gauss_next"]
        if len(internal) != 625 or not (gauss is None or isinstance(gauss, (int, float))):
            fail("bad random generator state")
        rng_state = (int(rng["version"]), internal, gauss)
        random.Random().setstate(rng_state)  # ValueError for a state Python would refuse later
        males = []
        for genes in data["males"]:
            if not isinstance(genes, list) or len(genes) != n_genes or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in genes):
                fail(f"a male genome is not a list of {n_genes} finite numbers")
            males.append(Male(float(x) for x in genes))
        if not isinstance(data["females"], list):
            fail("females is not a list")
        try:
            females = [trees.parse_tree(text, pset) for text in data["females"]]
        except FileFormatError as error:
            fail(str(error))
        number = (int, float)
        state = State(
            generation=int(data["generation"]),
            males=males,
            females=females,
            rng_state=rng_state,
            # a snapshot from before FLOPs were counted resumes with them at 0
            compute=Compute(**{k: type(v)(data["compute"].get(k, v) if k in ("flops", "failed")
                                          else data["compute"][k]) for k, v in vars(Compute()).items()}),
            charged=dict.fromkeys(str(k) for k in data["charged"]),
            hall_of_fame=records("hall_of_fame", {"key": str, "final_val_loss": number, "arch": dict}),
            logbook=records("logbook", {"generation": int}),
            promotions=records("promotions", {"key": str, "true": number, "arch": dict}),
            mating_stats={k: int(data["mating_stats"][k]) for k in State(0, [], [], ()).mating_stats},
            failures=records("failures", {"key": str, "reason": str}),
            sons=records("sons", {"generation": int, "key": str}) if "sons" in data else [],
            exhausted=bool(data["exhausted"]),
        )
        if state.generation < 0:
            fail("negative generation")
        return state
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        fail(f"missing or malformed field ({type(error).__name__}: {error})")
