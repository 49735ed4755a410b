"""Shared fixtures (an isolated gpnas cache for every test, a tiny generated corpus) and the
two markers:

- ``slow``: tests that train on the real text, run many generations or whole
  experiment scripts, start Ray or wait out a planted hang. They are listed in
  ``SLOW`` below, one table, so the fast loop ``pytest -m "not slow"`` (under a
  minute) is decided in one place; CI runs everything.
- ``gpu``: tests that need a real CUDA GPU (tests/train/test_gpu.py), skipped
  with the reason where torch sees none. The CPU suite keeps its tests of the
  CUDA code paths with a monkeypatched ``torch.cuda``.
"""

import fnmatch
import random

import pytest

# Node-id patterns (fnmatch) of the slow tests, with why. A pattern that matches no test
# of a file that was collected is an error, so a renamed test cannot silently leave the table.
SLOW = {
    # the real shakespeare_char text
    "tests/train/test_trainer.py::test_real_shakespeare_trains": "real text",
    # experiment scripts run end to end in a tiny mode
    "tests/train/test_trainer.py::test_the_speed_benchmark_runs_in_a_tiny_mode": "script",
    "tests/runs/test_parallel.py::test_the_benchmark_script_runs_in_tiny_mode": "script",
    "tests/jobs/test_ablation.py::test_run_script_in_a_tiny_mode": "script",
    "tests/jobs/test_ablation.py::test_experiment_scripts_regenerate_the_table_and_plots": "script",
    "tests/test_crash_safety.py::test_crash_trials_script_runs_in_a_tiny_mode": "script",
    "tests/integrations/test_integrations_optuna.py::test_the_pruner_benchmark_runs_in_a_tiny_mode": "script",
    "tests/cli/test_cli_user.py::test_the_engine_benchmark_replays_a_run_*": "script",
    "tests/cli/test_cli_curves.py::test_export_of_a_real_run_holds_its_completed_curves_as_the_archive_has_them":
        "a run",
    # many generations, many runs, or a run and its resume
    "tests/jobs/test_ablation.py::test_every_mode_*": "every mode over two seeds",
    "tests/jobs/test_ablation.py::test_runs_share_one_archive_and_a_rerun_trains_nothing": "ablation",
    "tests/jobs/test_ablation.py::test_an_interrupted_ablation_resumes_where_it_stopped": "ablation twice",
    "tests/jobs/test_ablation.py::test_a_changed_ablation_is_refused": "ablation",
    "tests/jobs/test_ablation.py::test_a_fixed_budget_applies_to_every_mode_including_combined": "ablation",
    "tests/search/test_engine.py::test_every_mode_writes_a_complete_run_folder*": "every mode",
    "tests/search/test_engine.py::test_resume_after_a_kill_mid_generation_equals_an_uninterrupted_run": "two runs",
    "tests/search/test_engine.py::test_a_finished_run_continues_to_more_generations": "two runs",
    "tests/search/test_engine.py::test_same_seed_same_result_different_seed_differs": "three runs",
    "tests/search/test_engine.py::test_cache_prevents_retraining_across_runs_sharing_an_archive": "two runs",
    "tests/search/test_methods.py::test_same_seed_same_result_different_seed_differs": "three runs",
    "tests/search/test_methods.py::test_every_method_runs_and_never_overspends*": "every method",
    "tests/search/test_methods.py::test_regularized_evolution_removes_the_oldest": "many generations",
    "tests/cli/test_cli_evolve.py::test_evolve_prints_generations_and_a_summary_then_show_repeats_it": "two gens",
    "tests/cli/test_cli_evolve.py::test_resume_continues_and_refuses_a_changed_config": "run and resume",
    "tests/runs/test_backends.py::test_serial_pool_and_ray_give_identical_summaries*": "a run per backend",
    "tests/test_crash_safety.py::test_a_run_killed_at_a_chosen_moment_resumes_to_the_uninterrupted_result*":
        "run, kill, resume",
    "tests/test_crash_safety.py::test_ctrl_c_stops_cleanly_says_how_to_resume_and_leaves_no_worker*": "subprocess",
    "tests/test_crash_safety.py::test_a_worker_that_dies_is_a_failed_evaluation_and_the_run_goes_on":
        "a worker respawned per death",
    "tests/test_crash_safety.py::test_a_simplification_that_never_ends_is_abandoned_and_the_run_finishes":
        "every simplify waits out its bound",
    "tests/test_crash_safety.py::test_an_evaluation_past_its_time_limit_is_a_failed_evaluation_*": "a 10 s hang",
    # families of one-generation runs: one case of each stays in the fast loop
    "tests/test_crash_safety.py::test_out_of_memory_is_a_failed_evaluation_with_its_reason_*[[]runtime-oom[]]":
        "one more run",
    "tests/test_crash_safety.py::test_out_of_memory_is_a_failed_evaluation_with_its_reason_*[[]host-oom[]]":
        "one more run",
    "tests/test_crash_safety.py::test_a_diverging_male_gets_the_worst_fitness_*[[]from the first evaluation[]]":
        "one more run",
    "tests/test_hostile_inputs.py::test_a_full_or_read_only_disk_stops_the_run_*[[]error[12][]]": "one more run",
    "tests/test_hostile_inputs.py::test_a_moved_run_folder_resumes_with_the_archive_it_holds": "resumes a generation",
    "tests/test_hostile_inputs.py::test_a_link_that_stays_inside_the_run_folder_is_fine": "resumes a generation",
    "tests/test_hostile_inputs.py::test_deleting_the_damaged_snapshot_resumes_from_the_one_before": "resumes one",
    "tests/search/test_engine.py::test_summary_json_is_strict_json": "a run",
    "tests/search/test_engine.py::test_a_run_folder_is_held_by_one_process_at_a_time": "a run and a subprocess",
    "tests/search/test_methods.py::test_successive_halving_cycles_hyperbands_brackets_and_resumes_its_checkpoints": "a run",
    # runs, trainings and fits whose behaviour the fast loop covers with a smaller case
    "tests/search/test_engine.py::test_a_checkpoint_lives_only_while_its_male_may_be_promoted": "several generations",
    "tests/search/test_engine.py::test_females_are_not_scored_again_on_the_curves_their_last_mating_pass_scored":
        "a 2-generation run",
    "tests/search/test_engine.py::test_combined_makes_as_many_variation_events_as_the_ablation": "a 3-generation run",
    "tests/search/test_engine.py::test_male_fitness_is_calibrated_on_earlier_promotions": "the same run",
    "tests/cli/test_cli_user.py::test_on_a_terminal_the_bar_never_garbles_a_line": "a run under a pseudo-terminal",
    "tests/cli/test_cli_user.py::test_train_on_a_terminal_prints_clean_eval_lines": "a training on a pseudo-terminal",
    "tests/cli/test_cli_user.py::test_evolve_into_a_closed_pipe_still_finishes_the_run": "a run in a subprocess",
    "tests/cli/test_cli_user.py::test_show_into_a_closed_pipe_ends_quietly": "a subprocess",
    "tests/cli/test_cli_user.py::test_resume_runs_to_the_runs_own_target_and_says_where_it_is": "run and resume",
    "tests/cli/test_cli_user.py::test_failed_evaluations_show_with_their_reason": "a run",
    "tests/cli/test_cli_user.py::test_report_html_in_a_headless_browser": "a browser",
    "tests/cli/test_cli_user.py::test_generation_lines_fit_100_columns_*": "a run under a pseudo-terminal",
    "tests/cli/test_cli_user.py::test_after_ctrl_c_the_bar_is_gone_*": "a run under a pseudo-terminal, interrupted",
    "tests/cli/test_cli_user.py::test_gpnas_help_imports_no_command": "a subprocess",
    "tests/predict/test_predictor.py::test_experiment_scripts_run_in_tiny_mode": "script",
    "tests/predict/test_predictor.py::test_same_seed_same_result_and_different_seeds_differ": "three fits",
    "tests/predict/test_closedform.py::test_closed_form_equals_tree_on_many_random_trees": "many trees through sympy",
    "tests/train/test_trainer.py::test_same_seed_same_curve_and_another_seed_another": "three trainings",
    "tests/train/test_trainer.py::test_a_stopped_and_resumed_run_equals_an_uninterrupted_one[[]stops1-*":
        "two more trainings",
    "tests/runs/test_parallel.py::test_backends_give_identical_results_on_a_seeded_workload*": "trains a workload",
    # worker processes and Ray (a private cluster starts), and planted hangs waited out
    "tests/runs/test_parallel.py::*[[]process[]]": "a pool of two spawned workers importing torch",
    "tests/runs/test_parallel.py::test_the_process_pool_*": "pool",
    "tests/runs/test_parallel.py::test_the_pool_is_kept_across_calls": "pool",
    "tests/runs/test_parallel.py::test_pool_workers_pin_their_thread_count": "pool",
    "tests/runs/test_parallel.py::test_an_unpicklable_function_raises_before_any_work": "pool",
    "tests/runs/test_parallel.py::test_no_retry_when_retries_is_zero": "pool",
    "tests/runs/test_parallel.py::*[[]ray[]]": "Ray",
    "tests/runs/test_parallel.py::test_ray_survives_a_killed_actor": "Ray",
    "tests/runs/test_parallel.py::test_an_unreachable_ray_address_is_one_line": "Ray",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(fnmatch.fnmatchcase(item.nodeid, pattern) for pattern in SLOW):
            item.add_marker(pytest.mark.slow)
    modules = {item.nodeid.split("::")[0]: getattr(item, "module", None) for item in items}
    stale = []
    for pattern in SLOW:
        path, function = pattern.split("::", 1)
        if modules.get(path) is not None:
            names = [n for n in dir(modules[path]) if n.startswith("test")]
            if not any(fnmatch.fnmatchcase(n, function.split("[")[0]) for n in names):
                stale.append(pattern)
    if stale:
        raise pytest.UsageError(f"tests/conftest.py: SLOW names tests that do not exist: {', '.join(stale)}")
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    reason = _no_gpu() if gpu else None
    for item in gpu if reason else ():
        item.add_marker(pytest.mark.skip(reason=reason))


def _no_gpu() -> str | None:
    """Why the gpu tests cannot run here, or None when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA (torch is not installed)"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None

TINY_WORDS = ("the", "king", "queen", "lord", "good", "night", "speak", "thou", "my", "of", "and", "to")


def make_corpus(n_chars: int = 20_000, seed: int = 0) -> str:
    """Shakespeare-flavoured lines from a dozen words: structured enough that a tiny model learns fast."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 8))).capitalize() + ".\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A folder holding input.txt made by make_corpus, for runs through the CLI or a subprocess."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "input.txt").write_text(make_corpus(), encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own GPNAS_CACHE_DIR, so nothing reads or writes the user's cache."""
    path = tmp_path_factory.mktemp("gpnas-cache")
    monkeypatch.setenv("GPNAS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def offline(monkeypatch):
    """No download reaches the network: every attempt fails as it would offline."""
    import urllib.error

    from gpnas.train import data

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    monkeypatch.delenv("GPNAS_DATA_DIR", raising=False)


@pytest.fixture
def tiny_corpus_text():
    """About 20,000 characters of generated text (the same every time)."""
    return make_corpus()


@pytest.fixture
def tiny_corpus_dir(tmp_path, tiny_corpus_text):
    """A folder holding input.txt with tiny_corpus_text."""
    folder = tmp_path / "tiny_corpus"
    folder.mkdir()
    (folder / "input.txt").write_text(tiny_corpus_text, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_dataset(tiny_corpus_dir):
    """The tiny corpus loaded as a gpnas Dataset (imports torch: trainer-side tests only)."""
    from gpnas.train.data import load_dataset

    return load_dataset(tiny_corpus_dir)
