"""The engine on the micro preset and a tiny generated corpus: every mode runs
and writes a complete run folder, the cache prevents retraining, a resumed run
ends where an uninterrupted one does, and seeds behave."""

import json
from pathlib import Path

import pytest

from gpnas.config import load_preset
from gpnas.errors import GpnasError
from gpnas.jobs.run import execute as execute_run
from gpnas.jobs.run import new_run, open_run
from gpnas.report.run import deterministic_part
from gpnas.runs.archive import Archive
from gpnas.runs.folder import RunFolder
from gpnas.search.engine import MODES
from gpnas.train.data import load_dataset


@pytest.fixture
def micro():
    return load_preset("micro")


def execute(run, generations, **kwargs):
    """One torch thread: tiny models run fastest so, and tests stay quick on a busy machine."""
    return execute_run(run, generations, threads=1, **kwargs)


def start(tmp_path, name, preset, dataset, mode="combined", seed=0, archive=None):
    return new_run(tmp_path / name, preset, mode, seed, dataset, archive)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_writes_a_complete_run_folder(tmp_path, micro, tiny_dataset, mode):
    run = start(tmp_path, mode, micro, tiny_dataset, mode=mode)
    summary, state = execute(run, 2)

    folder = run.folder.path
    for name in ("run.json", "archive.sqlite", "logbook.csv", "hall_of_fame.json", "summary.json",
                 "formulas.md", "plots/curves.png", "plots/predicted_vs_true.png"):
        assert (folder / name).exists(), name
    assert [p.name for p in RunFolder(folder).snapshot_paths()] == ["gen_0000.json", "gen_0001.json",
                                                                  "gen_0002.json"]
    assert len((folder / "logbook.csv").read_text().splitlines()) == 1 + 3  # header, gen 0..2
    assert summary["generations"] == 2
    best = summary["best_architecture"]
    with Archive(run.folder.archive_path) as archive:
        untrained = archive.get(best["key"]).curve["val_loss"][0]  # step 0: the same model before any step
    # training lowered the loss clearly (untrained: about ln 32 = 3.47; micro's reference falls by about 0.37)
    assert best["final_val_loss"] < untrained - 0.25
    assert summary["compute"]["steps"] > 0 and summary["compute"]["tokens"] > 0
    # every fully trained male's true final loss is on record
    assert len(state.promotions) >= micro.ga.seed_archive
    if MODES[mode].females:
        assert summary["females"], "a mode with females reports formulas"
        assert (folder / "predictor.json").exists()
    else:
        assert summary["females"] == []


def test_same_seed_same_result_different_seed_differs(tmp_path, micro, tiny_dataset):
    a, _ = execute(start(tmp_path, "a", micro, tiny_dataset, seed=1), 2)
    b, _ = execute(start(tmp_path, "b", micro, tiny_dataset, seed=1), 2)
    c, _ = execute(start(tmp_path, "c", micro, tiny_dataset, seed=2), 2)
    assert deterministic_part(a) == deterministic_part(b)
    assert deterministic_part(a) != deterministic_part(c)


def test_cache_prevents_retraining_across_runs_sharing_an_archive(tmp_path, micro, tiny_dataset):
    shared = tmp_path / "shared.sqlite"
    first, _ = execute(start(tmp_path, "first", micro, tiny_dataset, archive=shared), 2)
    second, _ = execute(start(tmp_path, "second", micro, tiny_dataset, archive=shared), 2)
    assert first["cache"]["trained"] > 0
    assert second["cache"]["trained"] == 0
    assert second["cache"]["hits"] == first["cache"]["trained"] + first["cache"]["hits"]
    assert deterministic_part(first) == deterministic_part(second)
    with Archive(shared) as archive:
        assert archive.count() == first["cache"]["trained"]


class Interrupt(Exception):
    pass


def test_resume_after_a_kill_mid_generation_equals_an_uninterrupted_run(tmp_path, micro, tiny_dataset):
    whole, _ = execute(start(tmp_path, "whole", micro, tiny_dataset), 3)

    calls = {"n": 0}

    def dying_map(fn, items):  # dies inside generation 2, after some evaluations were archived
        results = []
        for item in items:
            calls["n"] += 1
            if calls["n"] == micro.ga.seed_archive + 10:  # past the seeded archive, inside generation 1 or 2
                raise Interrupt
            results.append(fn(item))
        return results

    run = start(tmp_path, "killed", micro, tiny_dataset)
    with pytest.raises(Interrupt):
        execute(run, 3, map_fn=dying_map)
    done = RunFolder(run.folder.path).snapshot_paths()
    assert 0 < len(done) < 4
    resumed, _ = execute(open_run(run.folder.path, load_dataset), 3)
    assert deterministic_part(resumed) == deterministic_part(whole)
    assert resumed["cache"]["hits"] > 0


def test_a_finished_run_continues_to_more_generations(tmp_path, micro, tiny_dataset):
    whole, _ = execute(start(tmp_path, "whole", micro, tiny_dataset), 3)
    run = start(tmp_path, "steps", micro, tiny_dataset)
    execute(run, 2, keep_checkpoints=True)
    more, _ = execute(open_run(run.folder.path, load_dataset), 3)
    assert deterministic_part(more) == deterministic_part(whole)

    # without keep_checkpoints the end of the run deleted them: a promotion whose checkpoint
    # is gone trains from step 0 to the same curve, charged at the same freeze-thaw price
    run = start(tmp_path, "pruned", micro, tiny_dataset)
    execute(run, 2)
    pruned, _ = execute(open_run(run.folder.path, load_dataset), 3)
    assert deterministic_part(pruned) == deterministic_part(whole)


def test_a_checkpoint_lives_only_while_its_male_may_be_promoted(tmp_path, micro, tiny_dataset):
    from gpnas.search.males import decode

    run = start(tmp_path, "pruning", micro, tiny_dataset)
    archive = Archive(run.folder.archive_path)
    on_disk, resumed, seen = [], [], set()

    def spying_map(fn, items):  # what is on disk whenever the engine trains
        present = set(run.folder.checkpoints_dir.glob("*.pt"))
        on_disk.append(len(present))
        for task, _ in items:
            if task.resume_from:  # a promotion resumes its early checkpoint: it must still be there, unless
                # the male left the population (his checkpoint went) and came back as a son whose early
                # result was in the archive: then the worker trains from step 0 to the same curve
                assert Path(task.resume_from) in present or Path(task.resume_from) in seen
                resumed.append(task.key)
        seen.update(present)
        return [fn(item) for item in items]

    def after_generation(state, row):  # what is left: early states of males that may still be promoted
        population = [decode(g, micro.space) for g in state.males]
        seen.update(run.folder.checkpoints_dir.glob("*.pt"))
        for path in run.folder.checkpoints_dir.glob("*.pt"):
            record = archive.get(path.stem)
            assert record.status == "early" and path.stem in state.charged
            assert any(all(record.arch[k] == arch[k] for k in ("n_layer", "n_head", "n_embd")) for arch in population)

    execute_run(run, 3, threads=1, map_fn=spying_map, callbacks=[after_generation])
    archive.close()
    assert resumed, "promotions resume from early checkpoints"
    assert 0 < max(on_disk) <= micro.ga.n_males  # at most one per male of the population
    assert list(run.folder.checkpoints_dir.glob("*.pt")) == []  # none is left at the end

    kept = start(tmp_path, "kept", micro, tiny_dataset)
    execute(kept, 3, keep_checkpoints=True)
    assert len(list(kept.folder.checkpoints_dir.glob("*.pt"))) > micro.ga.n_males


def test_females_are_not_scored_again_on_the_curves_their_last_mating_pass_scored(tmp_path, micro, tiny_dataset,
                                                                                  monkeypatch):
    from gpnas.search import females as fem

    calls = []
    real = fem.score
    monkeypatch.setattr(fem, "score", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    execute(start(tmp_path, "r", micro, tiny_dataset), 2)
    # generation 1's step (2) (the initial females), then once per generation after the
    # promotions; step (2) of generation 2 finds the last mating pass's scores current
    assert len(calls) == 1 + 2


def test_summary_json_is_strict_json(tmp_path, micro, tiny_dataset):
    run = start(tmp_path, "j", micro, tiny_dataset)
    execute(run, 1)
    text = (run.folder.path / "summary.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))


def test_a_run_folder_is_held_by_one_process_at_a_time(tmp_path, micro, tiny_dataset):
    run = start(tmp_path, "held", micro, tiny_dataset)
    with run.folder.hold():
        with pytest.raises(GpnasError, match="in use by another gpnas process"):
            execute(run, 1)
    summary, _ = execute(run, 1)  # free again once the holder lets go
    assert summary["generations"] == 1


# ------------------------------------------------------------ mating, calibration, compute

def test_training_flops_follow_nanogpts_estimate_mfu():
    from gpnas.config import training_flops_per_token
    from gpnas.train.model import GPT, GPTConfig

    for L, H, d, T, V in [(2, 4, 64, 32, 65), (3, 1, 96, 32, 65), (6, 6, 384, 256, 65), (1, 2, 16, 16, 40)]:
        model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=H, n_embd=d))
        N = model.num_params()  # nanoGPT's get_num_params(): position embeddings left out
        assert training_flops_per_token(L, H, d, T, V) == 6 * N + 12 * L * H * (d // H) * T


@pytest.fixture(scope="module")
def combined_run(tmp_path_factory):
    """One combined run of three generations on micro, shared by the tests below."""
    from conftest import make_corpus

    root = tmp_path_factory.mktemp("combined")
    (root / "corpus").mkdir()
    (root / "corpus" / "input.txt").write_text(make_corpus(), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPNAS_CACHE_DIR", str(root / "cache"))
        dataset = load_dataset(root / "corpus")
        run = new_run(root / "run", load_preset("micro"), "combined", 0, dataset)
        summary, state = execute(run, 3)
    return summary, state


def test_combined_makes_as_many_variation_events_as_the_ablation(combined_run):
    summary, state = combined_run
    ga = load_preset("micro").ga
    m = summary["mating"]
    assert m["guided"] + m["random"] == 3 * (ga.n_males - ga.male_elites)
    # female_steps mating passes per generation, each of n_females - female_elites daughters
    # (within-gender makes female_steps plain GP steps of the same size instead)
    assert m["chose"] + m["tournament"] == 3 * ga.female_steps * (ga.n_females - ga.female_elites)
    assert len(state.sons) == 3 * (ga.n_males - ga.male_elites)
    trained = [s for s in state.sons if s["generation"] <= 3]
    assert all(isinstance(s["early_loss"], float) for s in trained)  # early loss recorded once trained
    assert m["guided_trained"] + m["random_trained"] == len(trained)


def test_male_fitness_is_calibrated_on_earlier_promotions(combined_run):
    from gpnas.search.calibration import Calibration

    summary, state = combined_run
    predicted = [p for p in state.promotions if p["raw"] is not None]
    assert predicted and all(p["generation"] >= 1 for p in predicted)
    for p in predicted:
        earlier = [(q["raw"], q["true"]) for q in predicted if q["generation"] < p["generation"]]
        calibration = Calibration.fit(*zip(*earlier)) if earlier else Calibration.fit([], [])
        assert p["predicted"] == pytest.approx(float(calibration(p["raw"])))
        assert p["spread"] >= 0 and isinstance(p["early_score"], float)
    cal = summary["calibration"]
    assert cal["promoted"] == len(predicted)
    errors = [p["predicted"] - p["true"] for p in predicted]
    assert cal["calibrated_bias"] == pytest.approx(sum(errors) / len(errors), abs=1e-6)
    # the log line's fields: early score beside the calibrated prediction, FLOPs beside tokens
    row = state.logbook[-1]
    assert row["best_predicted"] is not None and row["best_early_score"] is not None
    assert row["flops"] == state.compute.flops > row["tokens"] == state.compute.tokens > 0


def failing_map(fn, items):
    from gpnas.runs.parallel import Failure

    return [Failure("RuntimeError: CUDA was asked for but is not available", 1) for _ in items]


@pytest.mark.parametrize("mode", ["combined", "within-gender", "female", "male", "successive-halving",
                                  "regularized-evolution", "random"])
def test_a_run_where_every_evaluation_fails_goes_on_and_says_why(tmp_path, micro, tiny_dataset, mode):
    from gpnas.cli.evolve import _generation_line

    run = start(tmp_path, mode, micro, tiny_dataset, mode=mode)
    summary, state = execute(run, 2, map_fn=failing_map)
    assert summary["generations"] == 2 and summary["best_architecture"] is None
    assert [row["generation"] for row in state.logbook] == [0, 1, 2]
    assert all(row["evaluated"] > 0 for row in state.logbook[1:])  # (some methods train nothing in 0)
    for row in (r for r in state.logbook if r["evaluated"]):
        assert row["failed"] == row["evaluated"]
        assert f"{row['failed']} x RuntimeError: CUDA was asked for" in row["failure"]
        assert f"FAILED {row['failed']}: {row['failed']} x RuntimeError" in _generation_line(state, row)
    # failed evaluations are charged the steps they were given
    assert summary["compute"]["failed"] == summary["compute"]["evaluations"] > 0
    assert summary["compute"]["flops"] > 0 and summary["compute"]["steps"] > 0
    if mode == "combined":
        assert summary["mating"]["guided"] == 0 and summary["mating"]["random"] > 0


def test_every_evaluation_counts_as_evaluation_time_the_reference_too(tmp_path, micro, tiny_dataset):
    """The overhead a summary reports is the wall time outside the evaluator: the
    reference, trained after the last generation, is evaluation like every male."""
    import time

    calls = []

    def slow_map(fn, items):
        calls.append(len(items))
        time.sleep(0.3)
        return failing_map(fn, items)
    summary, _ = execute(start(tmp_path, "slow", micro, tiny_dataset), 1, map_fn=slow_map)
    assert summary["reference"] is not None and len(calls) >= 2
    assert summary["timing"]["evaluation_seconds"] >= 0.3 * len(calls)
    assert summary["timing"]["engine_seconds"] == pytest.approx(
        summary["timing"]["wall_seconds"] - summary["timing"]["evaluation_seconds"], abs=0.02)
