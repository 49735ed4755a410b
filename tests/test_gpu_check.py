"""experiments/gpu_check.sh, checked without a GPU: valid bash, one line and exit 2 where torch
sees no CUDA device, every option it passes exists, its reduced evolve budget is a valid preset,
its baby GPT is the preset's reference, and its report computes MFU from real `gpnas train
--json` output. The GPU parts themselves run on a GPU machine (tests/train/test_gpu.py)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu_check.sh"


def invocation(command: str) -> list[str]:
    """The arguments after ``python3 -m gpnas COMMAND`` in the script (continuation lines joined)."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if f"-m gpnas {command} " in ln]
    return shlex.split(line.split(f"-m gpnas {command} ", 1)[1].split(">")[0])


def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_without_a_gpu_it_stops_with_one_line_and_exit_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "report")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_check: torch sees no CUDA GPU here; install a CUDA build of torch (pip install torch) on a GPU machine"]


@pytest.mark.parametrize("command", ["train", "evolve"])
def test_every_option_the_script_passes_exists(command):
    from gpnas.cli.evolve import evolve_command
    from gpnas.cli.train import train_command

    known = {opt for param in {"train": train_command, "evolve": evolve_command}[command].params
             for opt in param.opts}
    used = {arg for arg in invocation(command) if arg.startswith("--")}
    assert "--device" in used and used <= known, used - known


def test_the_reduced_evolve_budget_is_a_valid_preset():
    from gpnas.config import load_preset

    args = invocation("evolve")
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    preset = load_preset("shakespeare-char", overrides)
    b = preset.budget
    assert (b.early_iters, b.full_iters, b.eval_interval, b.eval_batches, preset.ga.n_males) == (150, 600, 50, 10, 8)


def test_the_baby_gpt_is_the_presets_reference_and_nanogpts():
    """The script reads the architecture from the preset; the preset holds nanoGPT's baby GPT."""
    snippet = re.search(r'< <\(python3 -c "(.*?)"\)', SCRIPT.read_text(), re.S).group(1)
    printed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    assert printed == ["6", "6", "384", "0.2", "0.001", "256", "64", "5000", "100"]
    assert {"--eval-interval", "250", "--eval-batches", "200"} <= set(invocation("train"))  # nanoGPT's eval


def test_the_report_computes_mfu_from_real_train_output(tmp_path, tiny_corpus_dir, monkeypatch):
    from gpnas.cli import main

    result = CliRunner().invoke(main, ["train", "--json", "--device", "cpu", "--threads", "1",
                                       "--data-dir", str(tiny_corpus_dir), "--n-layer", "1", "--n-head", "2",
                                       "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
                                       "--max-iters", "20", "--eval-interval", "10", "--eval-batches", "2",
                                       "--warmup-iters", "2"])
    assert result.exit_code == 0, result.output
    baby = json.loads(result.output)
    assert baby["flops_per_token"] == 6 * baby["n_params"] + 12 * 1 * 32 * 16
    assert baby["peak_memory_bytes"] is None  # measured on CUDA only
    (tmp_path / "baby_gpt.json").write_text(result.output)
    (tmp_path / "machine.txt").write_text("NVIDIA H100 80GB HBM3, 81559 MiB, 550.54\ntorch 2.13.0 cuda 12.8\n16\n")
    (tmp_path / "steps.tsv").write_text("install\t0\t1200\ngpu_tests\t0\t30500\nbaby_gpt\t124\t420000\n")
    (tmp_path / "gpu_tests.txt").write_text("....\n5 passed in 20.1s\n")

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import gpu_report
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    monkeypatch.delenv("PEAK_TFLOPS", raising=False)
    assert gpu_report.main([str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    b = report["baby_gpt"]
    assert report["peak_bf16_tflops"] == 989
    assert b["mfu"] == pytest.approx(baby["flops_per_token"] * baby["train_tokens_per_s"] / 989e12)
    assert b["within_0.02_of_nanogpt"] is False  # 20 steps on a toy corpus
    assert report["steps"]["baby_gpt"] == {"exit": 124, "wall_s": 420.0, "status": "timed out"}
    assert report["gpu_tests"] == "5 passed in 20.1s"
    text = (tmp_path / "report.md").read_text()
    assert "MFU " in text and "989 TFLOP/s" in text and "Evolve: no result" in text
    assert gpu_report.peak_tflops("NVIDIA H100 PCIe") == 756 and gpu_report.peak_tflops("Tesla T4") is None
