"""What a new user meets (issue 13): a clean terminal, resumes that finish the
run, options checked before anything is created, failures with their reason,
a closed stdout that ends quietly, printable text only, and a result they can
use (reference beside the best, a train command, best_config.py, report.html).
"""

import ast
import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from tests.cli.terminal import ROOT, cursor_escapes, run_on_pty, screen_lines

MICRO = ["--preset", "micro", "--backend", "serial", "--threads", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus):
    """One finished 2-generation micro run and what its evolve printed."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = CliRunner().invoke(main, ["evolve", *MICRO, "--generations", "2", "--data-dir", str(corpus),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def evolve(*args):
    return CliRunner().invoke(main, ["evolve", *MICRO, *args])


# ------------------------------------------------------------------ terminal

def test_on_a_terminal_the_bar_never_garbles_a_line(tmp_path, corpus):
    code, raw = run_on_pty(["evolve", *MICRO, "--generations", "2", "--data-dir", str(corpus),
                            "--out", str(tmp_path / "run")])
    assert code == 0, raw.decode(errors="replace")[-2000:]
    assert b"generations:" in raw  # a bar was drawn...
    lines = screen_lines(raw)
    assert not any("generations:" in line for line in lines)  # ...and cleared: it garbles no line, none is left
    gen_lines = [line for line in lines if line.startswith("gen ")]
    assert len(gen_lines) == 3 and all(re.fullmatch(r"gen +\d+  trained +\d+  best loss .* FLOPs", line)
                                       for line in gen_lines)
    hide, show = cursor_escapes(raw)
    assert hide == show  # every hidden cursor is shown again (tqdm hides none)
    assert [line for line in lines if line][-1].startswith("see it again: gpnas show")


def test_train_on_a_terminal_prints_clean_eval_lines(corpus):
    code, raw = run_on_pty(["train", "--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--block-size", "16",
                            "--batch-size", "4", "--max-iters", "40", "--eval-interval", "10", "--eval-batches", "2",
                            "--warmup-iters", "2", "--threads", "1", "--data-dir", str(corpus)])
    assert code == 0, raw.decode(errors="replace")[-2000:]
    assert b"training:" in raw
    lines = screen_lines(raw)
    assert not any("training:" in line for line in lines)
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["0", "10", "20", "30", "40"]
    assert all(re.fullmatch(r"step \d+  train \d\.\d{4}  val \d\.\d{4}", line) for line in steps)


def test_under_a_pipe_there_is_no_bar_and_no_escape(finished):
    _, output = finished
    assert "\r" not in output and "\x1b" not in output and "generations:" not in output


# ------------------------------------------------------------------- resume

def test_resume_runs_to_the_runs_own_target_and_says_where_it_is(tmp_path, corpus, monkeypatch):
    import gpnas.cli.evolve as cli_evolve

    out = tmp_path / "run"
    line = cli_evolve._generation_line

    def killed_after_generation_2(state, row, *unit):
        if row["generation"] == 2:
            raise KeyboardInterrupt
        return line(state, row, *unit)

    monkeypatch.setattr(cli_evolve, "_generation_line", killed_after_generation_2)
    first = evolve("--generations", "4", "--data-dir", str(corpus), "--out", str(out))
    assert first.exit_code == 130
    assert f"gpnas evolve --resume {out}" in first.output
    monkeypatch.setattr(cli_evolve, "_generation_line", line)

    resumed = CliRunner().invoke(main, ["evolve", "--resume", str(out), "--threads", "1", "--backend", "serial"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {out} at generation 3 of 4" in resumed.output
    assert [ln.split()[1] for ln in resumed.output.splitlines() if ln.startswith("gen ")] == ["3", "4"]
    assert json.loads((out / "summary.json").read_text())["generations"] == 4

    again = CliRunner().invoke(main, ["evolve", "--resume", str(out), "--generations", "1", "--threads", "1"])
    assert again.exit_code == 0, again.output
    assert "4 generations are already done (asked for 1); nothing to run" in again.output
    assert not any(ln.startswith("gen ") for ln in again.output.splitlines())
    assert json.loads((out / "run.json").read_text())["generations"] == 4  # a smaller ask keeps the target


# ------------------------------------------------- options before any file

@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers"),
    (["--threads", "0"], "--threads"),
    (["--generations", "0"], "--generations"),
    (["--backend", "process", "--address", "auto"], "--address"),
])
def test_a_bad_option_creates_nothing(tmp_path, corpus, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["evolve", "--preset", "micro", *args, "--data-dir", str(corpus),
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cuda_without_cuda_is_refused_before_anything_starts(tmp_path, corpus):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["evolve", "--preset", "micro", "--device", "cuda", "--data-dir", str(corpus),
                                       "--out", str(out)])
    assert result.exit_code == 2
    assert "CUDA is not available" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


# ----------------------------------------------------------------- failures

def _failing_for(monkeypatch, should_fail):
    import gpnas.runs.worker as worker

    real = worker.run_evaluation

    def run_evaluation(task):
        if should_fail(task):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return real(task)

    monkeypatch.setattr(worker, "run_evaluation", run_evaluation)


def test_failed_evaluations_show_with_their_reason(tmp_path, corpus, monkeypatch):
    _failing_for(monkeypatch, lambda task: task.train_config["n_layer"] == 2)
    result = evolve("--generations", "2", "--data-dir", str(corpus), "--out", str(tmp_path / "run"), "--verbose")
    assert result.exit_code == 0, result.output
    failed = [ln for ln in result.output.splitlines() if ln.startswith("gen ") and "FAILED" in ln]
    assert failed and all(len(ln) <= 100 for ln in failed)
    reasons = [ln for ln in result.output.splitlines() if ln.strip().startswith("failed: ")]  # --verbose: whole
    assert len(reasons) == len(failed) and all("RuntimeError: CUDA error: no kernel image" in ln for ln in reasons)
    count = sum(int(re.search(r"FAILED (\d+)", ln).group(1)) for ln in failed)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert f"failed evaluations: {len(summary['failures'])}" in result.output
    assert len(summary["failures"]) <= count


def test_a_run_whose_every_male_fails_goes_on_and_says_why(tmp_path, corpus, monkeypatch):
    _failing_for(monkeypatch, lambda task: True)
    result = evolve("--generations", "2", "--data-dir", str(corpus), "--out", str(tmp_path / "run"), "--verbose")
    assert result.exit_code == 0, result.output
    failed = [ln for ln in result.output.splitlines() if ln.startswith("gen ") and "FAILED" in ln]
    reasons = [ln for ln in result.output.splitlines() if ln.strip().startswith("failed: ")]
    assert len(failed) == 3 and all("RuntimeError: CUDA error" in ln for ln in reasons) and len(reasons) == 3
    assert "Traceback" not in result.output


# ------------------------------------------------------------ closed stdout

def _closed_stdout_run(args, timeout=600):
    read, write = os.pipe()
    os.close(read)  # nobody reads: every write to stdout fails with EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "gpnas", *args], stdout=write, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=timeout)
    finally:
        os.close(write)


def test_show_into_a_closed_pipe_ends_quietly(finished):
    out, _ = finished
    done = _closed_stdout_run(["show", str(out)])
    assert done.returncode == 0 and done.stderr == b""


def test_evolve_into_a_closed_pipe_still_finishes_the_run(tmp_path, corpus):
    out = tmp_path / "run"
    done = _closed_stdout_run(["evolve", *MICRO, "--generations", "1", "--data-dir", str(corpus), "--out", str(out)])
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert json.loads((out / "summary.json").read_text())["generations"] == 1


# ---------------------------------------------------------- printable text

HOSTILE = "\x1b]0;owned\x07\x1b[2J<script>alert(1)</script>"


def test_strings_from_a_hostile_summary_reach_the_terminal_printable(tmp_path, finished):
    out, _ = finished
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for name in ("run.json", "summary.json"):
        (hostile / name).write_text((out / name).read_text())
    summary = json.loads((hostile / "summary.json").read_text())
    summary["females"][0]["formula"] = HOSTILE
    summary["females"][0]["latex"] = HOSTILE
    summary["preset"] = HOSTILE
    summary["failures"] = [{"key": "k", "arch": {"n_layer": HOSTILE}, "reason": HOSTILE}]
    (hostile / "summary.json").write_text(json.dumps(summary))

    shown = CliRunner().invoke(main, ["show", str(hostile)])
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert "\\x1b]0;owned\\x07" in shown.output  # visible, not executed by the terminal

    html = CliRunner().invoke(main, ["show", str(hostile), "--html"])
    assert html.exit_code == 0
    page = (hostile / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_strings_from_a_hostile_curve_file_reach_the_terminal_printable(tmp_path):
    curves = tmp_path / "curves.jsonl"
    lines = [json.dumps({"task": HOSTILE, "config_id": f"c{i}", "values": [1.0 / (1 + j * (1 + i % 3) * 0.1)
                                                                            for j in range(12)]})
             for i in range(12)]
    curves.write_text("\n".join(lines) + "\n")
    fit = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(curves), "--generations", "1",
                                    "--population", "8", "--out", str(tmp_path / "pred")])
    assert fit.exit_code == 0, fit.output
    scored = CliRunner().invoke(main, ["predictors", "eval", "--predictor", str(tmp_path / "pred"),
                                       "--curves", str(curves)])
    assert scored.exit_code == 0, scored.output
    for output in (fit.output, scored.output):
        assert "\x1b" not in output and "\x07" not in output
    assert "\\x1b]0;owned" in scored.output
    missing = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(curves), "--holdout-task",
                                        "\x1b[31mred", "--out", str(tmp_path / "p2")])
    assert missing.exit_code == 2 and "\x1b" not in missing.output and "\\x1b[31mred" in missing.output


# ------------------------------------------------------- help and messages

def test_help_and_curve_checks(tmp_path):
    help_text = CliRunner().invoke(main, ["predictors", "fit", "--help"]).output
    assert "%%" not in help_text  # click does no %-formatting: a literal %% would show
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"values": [0.9]}) + "\n" + json.dumps({"values": [1, 0.8, 0.7, 0.6, 0.5, 0.4]}) + "\n")
    result = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(short), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "curve 1" in result.output and "has 1 value and" in result.output and "1 values" not in result.output
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------ end of a run

def test_the_end_of_a_run_says_where_everything_went_and_how_to_go_on(finished):
    out, output = finished
    summary = json.loads((out / "summary.json").read_text())
    tail = output.splitlines()[-8:]
    assert tail[0].startswith(f"written to {out}/: summary.json, report.html")
    assert f"continue the search: gpnas evolve --resume {out} --generations 12" in output
    assert "reference architecture: n_layer=1 n_head=2 n_embd=16" in output  # micro's [reference]
    ref = summary["reference"]
    assert ref["charged"] is False and ref["final_val_loss"] > 0
    diff = summary["best_architecture"]["final_val_loss"] - ref["final_val_loss"]
    assert f"the best is {abs(diff):.4f} {'lower' if diff < 0 else 'higher'}" in output
    # the reference is reported beside the run, not charged to it: the run's compute is the last generation's
    with open(out / "logbook.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert summary["compute"]["tokens"] == int(last["tokens"])
    assert ref["tokens"] > 0


def test_the_printed_train_command_trains_the_best_architecture_as_the_run_did(finished):
    out, output = finished
    summary = json.loads((out / "summary.json").read_text())
    line = next(ln.strip() for ln in output.splitlines() if ln.strip().startswith("gpnas train "))
    args = shlex.split(line)[2:]
    args[args.index("--sample") + 1] = "40"
    result = CliRunner().invoke(main, ["train", *args, "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output)
    best = summary["best_architecture"]
    assert trained["best_val_loss"] == pytest.approx(best["best_val_loss"], abs=1e-5)
    assert trained["curve"]["val_loss"][-1] == pytest.approx(best["final_val_loss"], abs=1e-5)
    assert len(trained["sample"]) == 40


# nanoGPT train.py's globals that a config file may set (karpathy/nanoGPT, train.py)
NANOGPT_GLOBALS = {
    "out_dir", "eval_interval", "log_interval", "eval_iters", "eval_only", "always_save_checkpoint", "init_from",
    "wandb_log", "wandb_project", "wandb_run_name", "dataset", "gradient_accumulation_steps", "batch_size",
    "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "learning_rate", "max_iters", "weight_decay",
    "beta1", "beta2", "grad_clip", "decay_lr", "warmup_iters", "lr_decay_iters", "min_lr", "backend", "device",
    "dtype", "compile",
}


def test_best_config_py_is_a_nanogpt_config_of_the_best_architecture(finished):
    out, _ = finished
    summary = json.loads((out / "summary.json").read_text())
    tree = ast.parse((out / "best_config.py").read_text())
    values = {}
    for node in tree.body:  # nanoGPT's configurator exec()s the file: it must be plain assignments
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        values[node.targets[0].id] = ast.literal_eval(node.value)
    assert set(values) <= NANOGPT_GLOBALS
    arch, config = summary["best_architecture"]["arch"], summary["best_train_config"]
    assert {k: values[k] for k in ("n_layer", "n_head", "n_embd")} == {k: arch[k] for k in ("n_layer", "n_head",
                                                                                          "n_embd")}
    assert values["learning_rate"] == arch["learning_rate"] and values["dropout"] == arch["dropout"]
    assert values["max_iters"] == values["lr_decay_iters"] == config["max_iters"]
    assert values["min_lr"] == pytest.approx(arch["learning_rate"] / 10)
    assert values["beta2"] == 0.99 and values["eval_iters"] == config["eval_batches"]


def test_report_html_is_one_offline_page_with_rendered_formulas_and_plots(finished):
    from gpnas.report.html import is_offline

    out, _ = finished
    page = (out / "report.html").read_text()
    assert is_offline(page)
    assert page.count("<svg") >= 1  # formulas rendered by mathtext
    assert page.count("src='data:image/png;base64,") == 2
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['best_architecture']['final_val_loss']:.4f}" in page
    assert f"{summary['reference']['final_val_loss']:.4f}" in page


def test_report_html_in_a_headless_browser(finished, tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    from screenshot_report import find_browser, screenshot

    if find_browser() is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    import matplotlib.image

    out, _ = finished
    shot = screenshot(out / "report.html", tmp_path / "shot.png", height=1600)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    ink = (pixels[..., :3].mean(axis=2) < 0.5).mean()  # share of dark pixels: text, tables, plots
    assert 0.005 < ink < 0.5


def test_show_repeats_the_closing_lines(finished):
    out, _ = finished
    shown = CliRunner().invoke(main, ["show", str(out)])
    assert shown.exit_code == 0
    assert f"continue the search: gpnas evolve --resume {out}" in shown.output
    assert "gpnas train --n-layer" in shown.output
    html = CliRunner().invoke(main, ["show", str(out), "--html"])
    assert html.exit_code == 0 and html.output.strip() == f"wrote {Path(out) / 'report.html'}"


def test_the_engine_benchmark_replays_a_run_without_training_and_leaves_it_alone(finished, corpus):
    out, _ = finished
    before = sorted(p.name for p in (out / "snapshots").iterdir())
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_engine.py"), str(out), "--after", "0",
                             "--to", "2", "--repeats", "1", "--data-dir", str(corpus)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "generations 1-2: engine" in result.stdout
    assert "snapshot equals the run's own" in result.stdout
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == before


# ------------------------------------------- issue 24: output that reads at a glance

def test_generation_lines_fit_100_columns_the_bar_counts_generation_0_and_verbose_adds_the_rest(tmp_path, corpus):
    code, raw = run_on_pty(["evolve", *MICRO, "--generations", "2", "--data-dir", str(corpus),
                            "--out", str(tmp_path / "run"), "--verbose"])
    assert code == 0, raw.decode(errors="replace")[-2000:]
    text = raw.decode(errors="replace")
    assert "1/3" in text and "3/3" in text  # generations 0, 1 and 2: generation 0 moves the bar
    lines = screen_lines(raw)
    assert not any("generations:" in line for line in lines)
    gen_lines = [line for line in lines if line.startswith("gen ")]
    assert len(gen_lines) == 3 and all(len(line) <= 100 for line in gen_lines)
    assert all(line.endswith(" FLOPs") for line in gen_lines)
    assert any(re.search(r"early -?\d+(\.\d)? loss/Mtok", line) for line in gen_lines)  # the early score's unit
    verbose = [line for line in lines if line.startswith("         predictor ")]
    assert len(verbose) == 3 and sum(line.startswith("         cached ") for line in lines) == 3


def test_after_ctrl_c_the_bar_is_gone_and_the_resume_command_can_be_pasted(tmp_path, corpus):
    out = tmp_path / "a run ü"  # a space and a non-ASCII letter: printed quoted
    code, raw = run_on_pty(["evolve", *MICRO, "--generations", "30", "--data-dir", str(corpus), "--out", str(out)],
                           interrupt_after=b"gen   1 ")
    assert code == 130, raw.decode(errors="replace")[-2000:]
    screen = screen_lines(raw)
    lines = [line for line in screen if line]
    assert b"^C" in raw  # the terminal echoed Ctrl-C...
    assert not any("generations:" in line or "^C" in line for line in lines), lines[-5:]  # ...and it is gone
    assert screen[screen.index(lines[-2]) + 1] == lines[-1]  # with the bar, no blank line is left
    resume_line = lines[-1]
    assert resume_line.startswith("interrupted; finished generations are saved. Continue with: ")
    command = resume_line.split("Continue with: ", 1)[1]
    assert shlex.split(command) == ["gpnas", "evolve", "--resume", str(out)]


def test_printed_commands_quote_paths_with_spaces(tmp_path, finished):
    out, _ = finished
    moved = tmp_path / "my runs" / "ü run"
    moved.parent.mkdir()
    import shutil

    shutil.copytree(out, moved)
    shown = CliRunner().invoke(main, ["show", str(moved)])
    assert shown.exit_code == 0, shown.output
    for prefix in ("continue the search: ", "see it again: ", "  with nanoGPT: "):
        line = next(ln for ln in shown.output.splitlines() if ln.startswith(prefix))
        words = shlex.split(line[len(prefix):].split("   (")[0])
        assert str(moved) in words or str(moved / "best_config.py") in words, line


def test_the_choice_line_names_the_criterion_and_the_last_generations_figures(finished):
    out, output = finished
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "logbook.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    text = summary["predictor"]["text"]
    assert "because" in text  # the criterion that decided, not only figures
    line = next(ln for ln in output.splitlines() if ln.startswith("predictor chosen: "))
    assert line == f"predictor {text}"
    previous = summary["predictor"]["last_generation"]
    assert previous["predictor"] == last["predictor"] and str(previous["cv_spearman"]) == last["cv_spearman"]
    said = f"generation {last['generation']} used"
    assert said in output and said in (out / "report.html").read_text() and said in (out / "formulas.md").read_text()


def test_gpnas_help_imports_no_command():
    """`gpnas --help` lists the commands from a table, without importing torch, sympy or scipy
    (about 0.1 s instead of 1.8 s; experiments/bench_help.py measures it); the table matches
    each command's own help."""
    probe = ("import sys; from click.testing import CliRunner; from gpnas.cli import main; "
             "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
             "print(sorted(m for m in ('torch', 'sympy', 'scipy', 'numpy', 'deap') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

    from gpnas.cli import COMMANDS, SHORT_HELP

    assert set(SHORT_HELP) == set(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(None, name)
        assert SHORT_HELP[name] == command.get_short_help_str(limit=10_000), name
    listed = CliRunner().invoke(main, ["--help"]).output
    assert "evolve      Co-evolve architectures and learning-curve predictors." in listed
