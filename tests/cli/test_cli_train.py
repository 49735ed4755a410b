import json
import re

import pytest
from click.testing import CliRunner

from gpnas.cli import main

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--max-iters", "40", "--eval-interval", "20", "--eval-batches", "2", "--warmup-iters", "5",
        "--learning-rate", "3e-3", "--threads", "1", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("offline")  # see conftest.py


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_train_prints_greppable_eval_lines_and_a_metrics_block(tiny_corpus_dir):
    result = invoke("train", *TINY, "--data-dir", str(tiny_corpus_dir), "--sample", "25")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    evals = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in evals] == ["0", "20", "40"]
    assert all(re.fullmatch(r"step \d+  train \d+\.\d{4}  val \d+\.\d{4}", line) for line in evals)
    for key in ("final train loss", "best val loss", "total train time", "train tokens/s",
                "inference tokens/s", "parameters"):
        assert any(line.startswith(key) for line in lines), key
    assert lines[lines.index("sample:") + 1]  # the generated text follows
    assert "tiny_corpus (--data-dir, custom text)" in result.stdout


def test_train_json_is_one_object_and_nothing_else(tiny_corpus_dir):
    result = invoke("train", *TINY, "--data-dir", str(tiny_corpus_dir), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)  # fails if anything else reached stdout
    for key in ("final_train_loss", "best_val_loss", "total_train_time_s", "avg_inference_tokens_per_s",
                "train_tokens_per_s", "n_params", "curve"):
        assert key in record
    assert record["curve"]["eval_steps"] == [0, 20, 40] and len(record["curve"]["train_loss"]) == 40
    assert record["best_val_loss"] == min(record["curve"]["val_loss"])
    assert record["config"]["n_embd"] == 32 and record["dataset"]["name"] == "tiny_corpus"


@pytest.mark.parametrize("options, words", [
    (["--n-embd", "30", "--n-head", "4"], "divisible"),
    (["--n-layer", "0"], "positive"),
    (["--batch-size", "-2"], "positive"),
    (["--dropout", "1.0"], r"\[0, 1\)"),
    (["--device", "tpu"], "device"),
])
def test_invalid_configs_are_one_line_and_exit_2(tiny_corpus_dir, options, words):
    result = invoke("train", *TINY, *options, "--data-dir", str(tiny_corpus_dir))
    assert result.exit_code == 2
    assert re.search(words, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_missing_data_is_one_line_and_exit_1(tmp_path):
    result = invoke("train", *TINY, "--data-dir", str(tmp_path))
    assert result.exit_code == 1 and "no input.txt" in result.stderr
    result = invoke("train", *TINY)  # no copy anywhere, and offline
    assert result.exit_code == 1
    assert "cannot download" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_data_reports_source_hash_vocabulary_and_splits(tiny_corpus_dir, tiny_corpus_text):
    result = invoke("data", "--data-dir", str(tiny_corpus_dir))
    assert result.exit_code == 0, result.output
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert fields["source"] == "--data-dir"
    assert fields["vocab"] == f"{len(set(tiny_corpus_text))} characters"
    assert fields["train"].startswith(f"{int(len(tiny_corpus_text) * 0.9):,} ids")
    assert "custom text" in fields["sha256"]
