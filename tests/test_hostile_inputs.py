"""Hostile and broken inputs through the CLI: every one is refused with one
clear line and a non-zero exit; nothing in them is executed, and nothing
already finished is lost (the run folder is byte for byte as it was, or, for a
full disk, every earlier snapshot is intact and the run resumes).

Code carried by a file is a call to os.system (``touch PWNED``); os.system is
replaced by a recorder and the canary file must not appear. The tally of inputs
tried is the number of cases collected here (``pytest --collect-only -q``).
"""

import errno
import hashlib
import json
import os
import pickle
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from gpnas.predict.curves import write_curves
from gpnas.predict.features import CURVE_FEATURES
from gpnas.predict.predictor import FORMAT as PREDICTOR_FORMAT
from tests.predict.test_predictor import synthetic_curves

CODE = "__import__('os').system('touch PWNED')"
REAL_SYSTEM = os.system  # pickled by name: unpickling it anywhere calls the real os.system


class Payload:
    """Unpickling this runs os.system: a pickle that is also an attack."""

    def __reduce__(self):
        return (REAL_SYSTEM, ("touch PWNED",))


@pytest.fixture(autouse=True)
def no_code_runs(monkeypatch, tmp_path):
    """os.system records instead of running; the canary must not appear; the test runs in tmp_path."""
    calls = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command) or 0)
    monkeypatch.chdir(tmp_path)
    yield
    assert calls == [], f"code from a file ran: {calls}"
    assert not (tmp_path / "PWNED").exists()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *words, code=None):
    """Exit non-zero with exactly one 'Error:' line holding ``words``, and no traceback."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)))
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def digest(folder):
    """Every file's bytes under folder, hashed: 'nothing finished lost' means this does not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


# ------------------------------------------------------------------ predictor files

def predictor_dict(tree="add(rel_last, 0.5)", equations=None, **changes):
    scaling = {"coef": [0.0, 1.0], "lo": -1.0, "hi": 1.0}
    d = {"format": PREDICTOR_FORMAT, "version": 2, "features": list(CURVE_FEATURES), "config_keys": {},
         "prefix": {"frac": 0.2}, "best_index": 0, "ensemble": [0],
         "equations": equations or [{"kind": "tree", "tree": tree, "scaling": scaling}]}
    d.update(changes)
    return d


@pytest.fixture
def curves_file(tmp_path):
    path = tmp_path / "curves.jsonl"
    write_curves(path, synthetic_curves(12))
    return path


def test_a_plain_predictor_file_works(tmp_path, curves_file):
    (tmp_path / "p.json").write_text(json.dumps(predictor_dict()))
    result = cli("predictors", "predict", "--predictor", tmp_path / "p.json", "--curves", curves_file)
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 12


def balanced_tree(depth: int) -> str:
    """add(add(...), add(...)) with 2**depth leaves."""
    return "rel_last" if depth == 0 else f"add({balanced_tree(depth - 1)}, {balanced_tree(depth - 1)})"


PREDICTOR_CASES = {
    "import call in tree": (predictor_dict(tree=CODE), "tree"),
    "import call in an equation": (predictor_dict(equations=[{"kind": "tree", "tree": CODE,
                                                              "scaling": {"coef": [0, 1], "lo": -1, "hi": 1}}]),
                                   "tree"),
    "attribute access": (predictor_dict(tree="add(rel_last.__class__, 1)"), "tree"),
    "dunder name": (predictor_dict(tree="add(__builtins__, 1)"), "unknown name"),
    "statement after tree": (predictor_dict(tree="add(rel_last, 1); import os"), "tree"),
    "lambda": (predictor_dict(tree="lambda: 0"), "tree"),
    "string constant": (predictor_dict(tree="add(rel_last, 'x')"), "tree"),
    "wrong arity": (predictor_dict(tree="add(rel_last)"), "tree"),
    "deep nesting": (predictor_dict(tree="neg(" * 5000 + "rel_last" + ")" * 5000), "tree"),
    "infinite constant": (predictor_dict(tree="add(rel_last, 1e999)"), "tree"),
    "tree not a string": (predictor_dict(equations=[{"kind": "tree", "tree": 3}]), "tree"),
    "unknown feature list": (predictor_dict(features=["os.system"]), "features"),
    "not an object": ([1, 2, 3], "not a gpnas predictor"),
    "other format": (predictor_dict(format="pickle"), "not a gpnas predictor"),
    "prefix fraction not a number": (predictor_dict(prefix={"frac": "all"}), "predictor"),
    "prefix fraction NaN": (predictor_dict(prefix={"frac": float("nan")}), "predictor"),
    "prefix fraction out of range": (predictor_dict(prefix={"frac": 7}), "predictor"),
    # huge but finite: refused on load, never a numpy overflow warning and "prediction": NaN
    "huge coefficients": (predictor_dict(equations=[{"kind": "tree", "tree": "add(rel_last, slope_all)",
                                                     "scaling": {"coef": [-1e308, 1e308, 1e308], "lo": -1, "hi": 1}}]),
                          "beyond the limit"),
    "huge range": (predictor_dict(ranges={"rel_last": [-1e308, 1e308]}), "ranges"),
    # too large, and the message says so and names the limit (not "expected a non-empty tree string")
    "tree nested 100,000 deep": (predictor_dict(tree="neg(" * 100_000 + "rel_last" + ")" * 100_000),
                                 "too large", "100,000 characters"),
    "tree with 2^17 leaves": (predictor_dict(tree=balanced_tree(17)), "too large", "100,000 characters"),
}


@pytest.mark.parametrize("name", sorted(PREDICTOR_CASES))
def test_a_hostile_or_broken_predictor_file_is_refused(tmp_path, curves_file, name):
    content, *words = PREDICTOR_CASES[name]
    path = tmp_path / "predictor.json"
    path.write_text(json.dumps(content))
    for command in ("predict", "eval"):
        result = cli("predictors", command, "--predictor", path, "--curves", curves_file)
        refused(result, *words)
        assert "Warning" not in result.output and "NaN" not in result.output


@pytest.mark.parametrize("name, payload", [
    ("pickle", pickle.dumps(Payload())),
    ("truncated", json.dumps(predictor_dict()).encode()[:40]),
    ("not UTF-8", b"\xff\xfe\x00{\x80\x81"),
    ("empty", b""),
])
def test_a_predictor_file_that_is_not_json_text_is_refused(tmp_path, curves_file, name, payload):
    path = tmp_path / "predictor.json"
    path.write_bytes(payload)
    refused(cli("predictors", "predict", "--predictor", path, "--curves", curves_file), "predictor")


# ------------------------------------------------------------------ curve files

CURVE_CASES = {
    "NaN": ('{"values": [3.0, NaN, 2.0, 1.9, 1.8]}', "values[1]"),
    "inf": ('{"values": [3.0, Infinity, 2.0, 1.9, 1.8]}', "values[1]"),
    "minus inf": ('{"values": [3.0, 2.5, -Infinity, 1.9, 1.8]}', "values[2]"),
    "string value": ('{"values": [3.0, "2.5", 2.0, 1.9, 1.8]}', "values[1]"),
    "empty curve": ('{"values": []}', "values"),
    "no values": ('{"config_id": "a"}', "values"),
    "values not a list": ('{"values": "3,2,1"}', "values"),
    "not an object": ("[3.0, 2.0]", "JSON object"),
    "not JSON": ("values: 3, 2, 1", "not JSON"),
    "bad horizon": ('{"values": [3.0, 2.5, 2.0, 1.9], "horizon": 2}', "horizon"),
    "config not an object": ('{"values": [3.0, 2.5, 2.0, 1.9], "config": [0.1, 2]}', "config"),
    "config NaN": ('{"values": [3.0, 2.5, 2.0, 1.9], "config": {"n_layer": NaN}}', "config"),
    "duplicate ids": ('{"values": [3.0, 2.5, 2.0, 1.9, 1.8], "task": "t", "config_id": "a"}\n'
                      '{"values": [3.1, 2.6, 2.1, 2.0, 1.9], "task": "t", "config_id": "a"}', "duplicate"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, "curves.jsonl"),
}


@pytest.mark.parametrize("name", sorted(CURVE_CASES))
def test_a_broken_curve_file_is_refused_with_its_line(tmp_path, name):
    text, word = CURVE_CASES[name]
    path = tmp_path / "curves.jsonl"
    path.write_text(text + "\n")
    (tmp_path / "p.json").write_text(json.dumps(predictor_dict()))
    line = refused(cli("predictors", "predict", "--predictor", tmp_path / "p.json", "--curves", path), word)
    assert "curves.jsonl" in line


@pytest.mark.parametrize("name, payload", [("empty", b""), ("blank lines", b"\n\n  \n"),
                                           ("not UTF-8", b"\xff\xfe{\x00\x80"),
                                           ("pickle", pickle.dumps(Payload()))])
def test_a_curve_file_without_curves_is_refused(tmp_path, name, payload):
    path = tmp_path / "curves.jsonl"
    path.write_bytes(payload)
    refused(cli("predictors", "fit", "--curves", path, "--out", tmp_path / "out", "--generations", "0"),
            "curves.jsonl")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ presets

MICRO = (__import__("gpnas.config", fromlist=["PRESETS_DIR"]).PRESETS_DIR / "micro.toml").read_text()

PRESET_CASES = {
    "unknown top-level key": ('exec = "import os"\n' + MICRO, "unknown key exec"),
    "unknown key in a table": (MICRO + '\nexec = "import os"\n', "unknown key reference.exec"),
    "unknown ga key": (MICRO.replace("[ga]\n", "[ga]\nn_wizards = 3\n"), "unknown key ga.n_wizards"),
    "wrong type": (MICRO.replace("n_males = 4", 'n_males = "four"'), "ga.n_males"),
    "bool for int": (MICRO.replace("n_males = 4", "n_males = true"), "ga.n_males"),
    "float for int": (MICRO.replace("batch_size = 4", "batch_size = 4.5"), "budget.batch_size"),
    "empty range": (MICRO.replace("n_layer = { min = 1, max = 2 }", "n_layer = { min = 3, max = 2 }"),
                    "empty range"),
    "empty choices": (MICRO.replace("n_head = { choices = [1, 2] }", "n_head = { choices = [] }"),
                      "space.n_head.choices"),
    "negative size": (MICRO.replace("n_layer = { min = 1, max = 2 }", "n_layer = { min = -2, max = 2 }"),
                      "space.n_layer"),
    "nan rate": (MICRO.replace("max = 1e-2", "max = nan"), "space.learning_rate.max"),
    "absurd size": (MICRO.replace("n_embd = { choices = [8, 16, 32] }", "n_embd = { choices = [8, 16, 1048576] }"),
                    "GiB"),
    "absurd count": (MICRO.replace("n_layer = { min = 1, max = 2 }", "n_layer = { min = 1, max = 1e12 }"),
                     "space.n_layer"),
    "huge population": (MICRO.replace("n_males = 4", "n_males = 100000000000"), "ga.n_males", "limit"),
    "huge female population": (MICRO.replace("n_females = 8", "n_females = 100000000000"), "ga.n_females", "limit"),
    "huge budget": (MICRO.replace("batch_size = 4", "batch_size = 100000000000"), "budget.batch_size", "limit"),
    "search beyond memory": (MICRO.replace("n_males = 4", "n_males = 10000").replace(
        "son_candidates = 4", "son_candidates = 1000"), "ga.n_males", "GiB"),
    "not TOML": ("name = [unclosed\n", "not valid TOML"),
    "space not a table": (MICRO.replace("[space]\n", "space = 3\n[space2]\n"), "preset"),
}


@pytest.mark.parametrize("name", sorted(PRESET_CASES))
def test_a_broken_preset_is_refused_before_anything_runs(tmp_path, tiny_corpus_dir, name):
    text, *words = PRESET_CASES[name]
    path = tmp_path / "preset.toml"
    path.write_text(text)
    refused(cli("evolve", "--preset", path, "--data-dir", tiny_corpus_dir, "--out", tmp_path / "run",
                "--backend", "serial"), *words, code=2)
    assert not (tmp_path / "run").exists()


def test_a_non_utf8_preset_is_refused(tmp_path, tiny_corpus_dir):
    path = tmp_path / "preset.toml"
    path.write_bytes(b"name = \"\xff\xfe\"\n")
    refused(cli("evolve", "--preset", path, "--data-dir", tiny_corpus_dir, "--out", tmp_path / "run"),
            "not valid TOML", code=2)


def test_a_model_too_big_for_this_machine_is_refused_before_training_with_the_estimate(tmp_path, tiny_corpus_dir):
    # under the preset's absolute cap (256 GiB) but above this machine's RAM (tests never run on such a box)
    from gpnas.config import device_memory_bytes, estimate_memory_bytes, largest_architecture, load_preset

    sets = ["space.n_embd.choices=[8, 16, 4096]", "space.n_layer.max=24", "budget.batch_size=64",
            "budget.block_size=128"]
    preset = load_preset("micro", sets)
    need = estimate_memory_bytes(largest_architecture(preset.space, preset.reference), preset.budget)
    limit, _ = device_memory_bytes("cpu")
    if not limit < need < 256 * 2**30:
        pytest.skip("this machine has more memory than the test's model needs")
    result = cli("evolve", "--preset", "micro", *[a for s in sets for a in ("--set", s)], "--device", "cpu",
                 "--backend", "serial", "--threads", "1", "--generations", "1",
                 "--data-dir", tiny_corpus_dir, "--out", tmp_path / "run")
    line = refused(result, "needs about", "GiB", "CPU RAM", code=2)
    assert f"{need / 2**30:.1f} GiB" in line
    assert not (tmp_path / "run").exists(), "refused before the run folder exists"


def test_the_memory_limit_is_the_device_memory(monkeypatch, tmp_path, tiny_corpus_dir):
    import gpnas.config as config

    monkeypatch.setattr(config, "device_memory_bytes", lambda device="auto": (2**16, "a 64 KiB test device"))
    result = cli("evolve", "--preset", "micro", "--device", "cpu", "--backend", "serial", "--threads", "1",
                 "--generations", "1",
                 "--data-dir", tiny_corpus_dir, "--out", tmp_path / "run")
    refused(result, "64 KiB test device", "0.0 GiB", code=2)


def test_gpnas_train_refuses_a_model_too_big_for_the_device_before_loading_data(tmp_path, monkeypatch):
    import gpnas.config as config

    monkeypatch.setattr(config, "device_memory_bytes", lambda device="auto": (2**30, "a 1 GiB test device"))
    result = cli("train", "--n-layer", "12", "--n-head", "8", "--n-embd", "1024", "--batch-size", "64",
                 "--block-size", "256", "--device", "cpu", "--data-dir", tmp_path / "no-such-folder")
    line = refused(result, "needs about", "GiB", "1.0 GiB of a 1 GiB test device", code=2)
    assert "input.txt" not in line  # refused before the data is looked for


def test_on_a_gpu_the_limit_is_the_gpu_memory(monkeypatch):
    import types

    import torch

    from gpnas.config import check_fits, device_memory_bytes, load_preset
    from gpnas.errors import ConfigError

    props = types.SimpleNamespace(total_memory=80 * 2**30, name="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    assert device_memory_bytes("auto") == (80 * 2**30, "NVIDIA H100 80GB HBM3 (cuda:0)")
    assert device_memory_bytes("cuda:1")[1] == "NVIDIA H100 80GB HBM3 (cuda:1)"
    preset = load_preset("shakespeare-char")
    check_fits({"n_layer": 6, "n_head": 6, "n_embd": 384}, preset.budget, "cuda")  # nanoGPT's model fits
    with pytest.raises(ConfigError, match=r"needs about .* GiB to train, more than the 80.0 GiB of NVIDIA H100"):
        check_fits({"n_layer": 48, "n_head": 16, "n_embd": 2048}, preset.budget, "cuda")


# ------------------------------------------------------------------ data files

@pytest.mark.parametrize("name, payload, word", [
    ("empty", b"", "empty"),
    ("whitespace", b"  \n\n ", "empty"),
    ("binary", b"\x00\x01\x02text\x00" * 500, "binary"),
    ("not UTF-8", b"caf\xe9 " * 2000, "not UTF-8"),
    ("too short for a block", b"abc\n", "too few"),
])
def test_a_broken_data_file_is_refused(tmp_path, name, payload, word):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "input.txt").write_bytes(payload)
    refused(cli("train", "--data-dir", folder, "--n-layer", "1", "--n-head", "1", "--n-embd", "8",
                "--max-iters", "2", "--eval-interval", "1", "--eval-batches", "1", "--block-size", "8",
                "--batch-size", "2", "--threads", "1", "--device", "cpu"), word)


def test_a_cached_text_with_the_wrong_hash_is_refused(isolated_cache, monkeypatch, tiny_corpus_text):
    monkeypatch.delenv("GPNAS_DATA_DIR", raising=False)
    (isolated_cache / "shakespeare_char").mkdir()
    (isolated_cache / "shakespeare_char" / "input.txt").write_text(tiny_corpus_text)
    refused(cli("data"), "not the canonical shakespeare_char text")


def test_a_data_dir_without_input_txt_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(cli("data", "--data-dir", tmp_path / "empty"), "no input.txt")


# ------------------------------------------------------------------ run folders

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real one-generation micro run, finished; each test damages a copy of it."""
    from conftest import make_corpus

    root = tmp_path_factory.mktemp("finished")
    (root / "corpus").mkdir()
    (root / "corpus" / "input.txt").write_text(make_corpus())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPNAS_CACHE_DIR", str(root / "cache"))
        result = CliRunner().invoke(main, ["evolve", "--preset", "micro", "--backend", "serial", "--threads", "1",
                                           "--generations", "1", "--data-dir", str(root / "corpus"),
                                           "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A copy of the finished run, as it is: run.json names its archive relative to the folder,
    so the copy uses the copy's archive."""
    folder = tmp_path / "run"
    shutil.copytree(finished_run / "run", folder)
    shutil.copytree(finished_run / "corpus", tmp_path / "corpus")
    return folder


@pytest.fixture
def outside(tmp_path):
    """A folder beside the run that nothing may touch: holds a canary and a checkpoint-like temporary file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "canary.txt").write_text("keep me")
    (folder / "deadbeef.pt.99999999.tmp").write_text("not gpnas's to delete")
    return folder


def tree(folder):
    """Every path under folder with its bytes (files) or None (folders): what 'untouched' compares."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def resume(folder, generations=2):
    return cli("evolve", "--resume", folder, "--generations", generations, "--backend", "serial",
               "--threads", "1", "--data-dir", folder.parent / "corpus")


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_key(key, value):
    def change(d):
        d[key] = value
    return change


def set_in(outer, key, value):
    def change(d):
        d[outer][key] = value
    return change


SNAPSHOT_CASES = {
    "female carrying code": (lambda d: d["females"].__setitem__(0, CODE), "tree"),
    "female with attribute access": (lambda d: d["females"].__setitem__(0, "rel_last.__globals__"), "tree"),
    "female deeply nested": (lambda d: d["females"].__setitem__(0, "neg(" * 3000 + "rel_last" + ")" * 3000),
                             "tree"),
    "male of strings": (lambda d: d["males"].__setitem__(0, ["__import__", 1, 2, 3, 4]), "genome"),
    "male with NaN": (lambda d: d["males"].__setitem__(0, [1, 1, 8, float("nan"), -2.5]), "genome"),
    "male too short": (lambda d: d["males"].__setitem__(0, [1, 1]), "genome"),
    "random state out of range": (lambda d: d["rng_state"]["internal"].__setitem__(624, 10**6), "snapshot"),
    "random state too short": (lambda d: d["rng_state"].__setitem__("internal", [1, 2]), "random"),
    "hall of fame entry of wrong type": (set_key("hall_of_fame", [{"key": "k", "final_val_loss": "low"}]),
                                         "hall_of_fame"),
    "hall of fame not a list": (set_key("hall_of_fame", "everything"), "hall_of_fame"),
    "failures of wrong type": (set_key("failures", [3]), "failures"),
    "compute not numbers": (set_in("compute", "steps", "many"), "snapshot"),
    "missing field": (lambda d: d.pop("charged"), "charged"),
    "not an object": (lambda d: d.clear(), "snapshot"),
}


@pytest.mark.parametrize("name", sorted(SNAPSHOT_CASES))
def test_a_damaged_or_hostile_snapshot_is_refused_on_resume(run_copy, name):
    change, word = SNAPSHOT_CASES[name]
    latest = run_copy / "snapshots" / "gen_0001.json"
    if name == "not an object":
        latest.write_text("[]")
    else:
        edit_json(latest, change)
    before = digest(run_copy)
    line = refused(resume(run_copy), word)
    assert "gen_0001.json" in line and "delete it to resume from the snapshot before" in line
    assert digest(run_copy) == before


@pytest.mark.parametrize("name, payload", [
    ("truncated", None),
    ("not UTF-8", b"\xff\xfe{\"generation\": 1}"),
    ("pickle", pickle.dumps(Payload())),
    ("empty", b""),
    ("deep nesting", b"[" * 200_000 + b"]" * 200_000),
])
def test_a_snapshot_that_is_not_json_text_is_refused(run_copy, name, payload):
    latest = run_copy / "snapshots" / "gen_0001.json"
    latest.write_bytes(latest.read_bytes()[:100] if payload is None else payload)
    before = digest(run_copy)
    refused(resume(run_copy), "gen_0001.json", "delete it to resume from the snapshot before")
    assert digest(run_copy) == before


def test_deleting_the_damaged_snapshot_resumes_from_the_one_before(run_copy):
    (run_copy / "snapshots" / "gen_0001.json").write_bytes(b"\x80garbage")
    refused(resume(run_copy), "delete it")
    (run_copy / "snapshots" / "gen_0001.json").unlink()
    result = resume(run_copy, generations=1)
    assert result.exit_code == 0, result.output
    assert (run_copy / "snapshots" / "gen_0001.json").exists()


RUN_JSON_CASES = {
    "unknown mode": (set_key("mode", "__import__('os')"), "mode"),
    "seed a string": (set_key("seed", "0; rm -rf /"), "seed"),
    "preset missing": (lambda d: d.pop("preset"), "preset"),
    "preset with an unknown key": (set_in("preset", "exec", "import os"), "unknown key exec"),
    "preset with a wrong type": (lambda d: d["preset"]["ga"].__setitem__("n_males", "4"), "ga.n_males"),
    "preset with an absurd size": (lambda d: d["preset"]["space"]["n_embd"].__setitem__("choices", [8, 16, 2**22]),
                                   "GiB"),
    "data missing": (lambda d: d.pop("data"), "data"),
    "data of another text": (set_in("data", "sha256", "0" * 64), "not the data"),
    "other format": (set_key("format", "pickle"), "not a gpnas run"),
    "archive not a path": (set_key("archive", ["/etc/passwd"]), "archive"),
}


@pytest.mark.parametrize("name", sorted(RUN_JSON_CASES))
def test_a_damaged_or_hostile_run_json_is_refused_on_resume(run_copy, name):
    change, word = RUN_JSON_CASES[name]
    edit_json(run_copy / "run.json", change)
    before = digest(run_copy)
    refused(resume(run_copy), word)
    assert digest(run_copy) == before


def test_a_moved_run_folder_resumes_with_the_archive_it_holds(run_copy, finished_run):
    assert json.loads((run_copy / "run.json").read_text())["archive"] == "archive.sqlite"
    original = digest(finished_run / "run")
    result = resume(run_copy, generations=2)
    assert result.exit_code == 0, result.output
    assert (run_copy / "snapshots" / "gen_0002.json").exists()
    assert digest(finished_run / "run") == original  # the copy never wrote to the original's archive


# A run.json that names an archive outside the folder made gpnas create folders and SQLite
# files there, put checkpoints beside it and delete *.pt.*.tmp files in them.
ARCHIVE_CASES = {
    "absolute path outside": (lambda out: {"archive": str(out / "new" / "deep" / "archive.sqlite")}, "outside"),
    "relative path climbing out": (lambda out: {"archive": "../outside/archive.sqlite"}, "outside"),
    "forged --archive flag, no such file": (
        lambda out: {"archive": str(out / "new" / "archive.sqlite"), "archive_external": True,
                     "run_id": "0" * 32}, "not an existing archive"),
    "forged --archive flag on an empty file": (
        lambda out: {"archive": str(out / "canary.txt"), "archive_external": True, "run_id": "0" * 32},
        "never given to this run"),
    "forged --archive flag, relative": (
        lambda out: {"archive": "../outside/canary.txt", "archive_external": True, "run_id": "0" * 32},
        "not an existing archive"),
    "forged --archive flag without a run id": (
        lambda out: {"archive": str(out / "canary.txt"), "archive_external": True}, "run_id"),
    "flag not a boolean": (lambda out: {"archive_external": "yes"}, "archive_external"),
    "run id not hex": (lambda out: {"archive": str(out / "canary.txt"), "archive_external": True,
                                    "run_id": "../../etc"}, "run_id"),
    "a NUL byte": (lambda out: {"archive": "arch\x00ive.sqlite"}, "archive"),
}


@pytest.mark.parametrize("name", sorted(ARCHIVE_CASES))
def test_a_run_json_naming_an_archive_outside_the_folder_is_refused(run_copy, outside, name):
    change, word = ARCHIVE_CASES[name]
    if name == "forged --archive flag on an empty file":
        (outside / "canary.txt").write_bytes(b"")  # SQLite would write a new archive into it
    edit_json(run_copy / "run.json", lambda d: d.update(change(outside)))
    before, around = digest(run_copy), tree(outside)
    refused(resume(run_copy), word)
    assert digest(run_copy) == before
    assert tree(outside) == around


def test_a_genuine_archive_elsewhere_that_never_knew_the_run_is_refused(run_copy, outside):
    """A forged run.json cannot aim a run at a real gpnas archive the user has: it must know the run's id."""
    shutil.copy(run_copy / "archive.sqlite", outside / "archive.sqlite")
    (outside / "checkpoints").mkdir()
    (outside / "checkpoints" / "cafe.pt.99999999.tmp").write_text("a stale checkpoint of someone else's run")
    edit_json(run_copy / "run.json", set_key("archive", str(outside / "archive.sqlite")))
    edit_json(run_copy / "run.json", lambda d: d.update(archive_external=True, run_id="ab" * 16))
    around = tree(outside)
    refused(resume(run_copy), "never given to this run")
    assert tree(outside) == around


LINK_CASES = {  # what becomes a link into outside/
    "snapshots folder": "snapshots",
    "plots folder": "plots",
    "checkpoints folder": "checkpoints",
    "a plot file": "plots/curves.png",
    "a snapshot file": "snapshots/gen_0001.json",
    "the archive": "archive.sqlite",
    "the archive's write-ahead log": "archive.sqlite-wal",
    "the lock file": ".lock",
    "a planted temporary file": ".logbook.csv.tmp",
    "a checkpoint file": "checkpoints/feed.pt",
}


@pytest.mark.parametrize("name", sorted(LINK_CASES))
def test_a_link_that_leads_out_of_the_run_folder_is_refused(run_copy, outside, name):
    """Each link points at a faithful copy outside (or at the canary): followed, the run would work,
    and write, there."""
    link = run_copy / LINK_CASES[name]
    link.parent.mkdir(exist_ok=True)
    target = outside / link.name
    if link.is_dir():
        shutil.copytree(link, target)
        shutil.rmtree(link)
    elif link.exists():
        shutil.copy(link, target)
        link.unlink()
    elif name.endswith("folder"):
        target.mkdir()
    else:
        target = outside / "canary.txt"
    link.symlink_to(target)
    before, around = digest(run_copy), tree(outside)
    line = refused(resume(run_copy), link.name, "outside")
    assert "is a link to" in line
    assert digest(run_copy) == before
    assert tree(outside) == around


def test_a_link_that_stays_inside_the_run_folder_is_fine(run_copy):
    (run_copy / "figures").mkdir()
    (run_copy / "plots").rename(run_copy / "figures" / "plots")
    (run_copy / "plots").symlink_to(run_copy / "figures" / "plots")
    result = resume(run_copy, generations=2)
    assert result.exit_code == 0, result.output
    assert (run_copy / "figures" / "plots" / "curves.png").exists()


def test_a_new_run_in_a_folder_with_a_link_out_is_refused_before_anything_is_written(tmp_path, outside,
                                                                                      tiny_corpus_dir):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / "snapshots").symlink_to(outside)
    around = tree(outside)
    refused(cli("evolve", "--preset", "micro", "--backend", "serial", "--threads", "1", "--generations", "1",
                "--data-dir", tiny_corpus_dir, "--out", out), "snapshots", "outside")
    assert tree(outside) == around
    assert sorted(p.name for p in out.iterdir()) == ["snapshots"]


def test_a_data_file_changed_since_the_run_started_is_refused_on_resume(run_copy):
    text = run_copy.parent / "corpus" / "input.txt"
    text.write_text(text.read_text() + "One more line.\n")
    before = digest(run_copy)
    refused(resume(run_copy), "is not the data run", "sha256", code=2)
    assert digest(run_copy) == before


@pytest.mark.parametrize("name, payload", [
    ("truncated", None), ("not UTF-8", b"\xff\xfe\x00"), ("pickle", pickle.dumps(Payload())), ("empty", b""),
])
def test_a_run_json_that_is_not_json_text_is_refused(run_copy, name, payload):
    path = run_copy / "run.json"
    path.write_bytes(path.read_bytes()[:50] if payload is None else payload)
    before = digest(run_copy)
    refused(resume(run_copy), "run.json")
    refused(cli("show", run_copy), "run.json")
    assert digest(run_copy) == before


@pytest.mark.parametrize("name, payload, word", [
    ("truncated", None, "not valid JSON"),
    ("not UTF-8", b"\xff\xfe\x00", "not UTF-8"),
    ("pickle", pickle.dumps(Payload()), "summary.json"),
    ("a list", b"[1, 2]", "not a gpnas summary"),
    ("missing fields", b'{"mode": "combined"}', "not a gpnas summary"),
    ("fields of wrong type", b'{"mode": 1, "preset": 2, "seed": 3, "generations": "x", "best_architecture": 5}',
     "not a gpnas summary"),
    ("deep nesting", b"[" * 200_000 + b"]" * 200_000, "summary.json"),
])
def test_a_broken_summary_is_refused_by_show(run_copy, name, payload, word):
    path = run_copy / "summary.json"
    path.write_bytes(path.read_bytes()[:80] if payload is None else payload)
    for args in ((), ("--json",)):
        if args and name in ("a list", "missing fields", "fields of wrong type"):
            continue  # valid JSON: --json prints it as it is
        refused(cli("show", run_copy, *args), word)


def test_a_foreign_or_damaged_archive_is_refused(run_copy):
    archive = run_copy / "archive.sqlite"
    for (suffix) in ("-wal", "-shm"):
        (run_copy / f"archive.sqlite{suffix}").unlink(missing_ok=True)
    archive.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)  # a torn header
    refused(resume(run_copy), "archive")
    archive.unlink()
    with sqlite3.connect(archive) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    refused(resume(run_copy), "another SQLite database")


@pytest.mark.parametrize("result", ['{"curve": "__import__(\'os\')"}', '[1, 2]', '{"curve": {"val_loss": "x"}}',
                                    '{"curve": {"train_loss": [], "eval_steps": [0], "val_loss": [], '
                                    '"step_time_s": []}}'])
def test_an_archive_record_without_a_learning_curve_is_refused(run_copy, result):
    with sqlite3.connect(run_copy / "archive.sqlite") as db:
        db.execute("UPDATE evaluations SET result = ?", (result,))
    db.close()
    before = {p.name: p.read_bytes() for p in (run_copy / "snapshots").glob("gen_*.json")}
    refused(resume(run_copy), "holds no learning curve", "start a new one")
    assert {p.name: p.read_bytes() for p in (run_copy / "snapshots").glob("gen_*.json")} == before


def test_a_checkpoint_carrying_a_pickle_never_runs_and_the_evaluation_fails(tmp_path, tiny_corpus_dir):
    """torch.load(weights_only=True) refuses the payload; the evaluation is a failure with its reason."""
    from gpnas.runs.parallel import SerialMap
    from gpnas.runs.worker import EvalTask, run_evaluation

    bad = tmp_path / "early.pt"
    with open(bad, "wb") as handle:
        pickle.dump({"format": 1, "model": Payload()}, handle, protocol=2)
    task = EvalTask(key="k", train_config=dict(n_layer=1, n_head=1, n_embd=8, dropout=0.0, learning_rate=1e-3,
                                               block_size=8, batch_size=2, max_iters=4, eval_interval=2,
                                               eval_batches=1, warmup_iters=0),
                    seed=0, stop_at=None, data_dir=str(tiny_corpus_dir), checkpoint=str(tmp_path / "full.pt"),
                    resume_from=str(bad), device="cpu", threads=1)
    (failure,) = SerialMap()(run_evaluation, [task])
    assert "cannot read checkpoint" in failure.reason and "delete it" in failure.reason


# ------------------------------------------------------------------ full or read-only disk

@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   PermissionError(errno.EACCES, "Permission denied"),
                                   OSError(errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_disk_stops_the_run_with_one_line_and_keeps_earlier_snapshots(
        run_copy, monkeypatch, error):
    import gpnas.runs.folder as runfolder

    earlier = {p.name: p.read_bytes() for p in (run_copy / "snapshots").glob("gen_*.json")}
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):  # the first snapshot write of generation 2 fails
        if mode[0] in "wx" and str(path).endswith(".gen_0002.json.tmp"):
            real_open(path, mode, *args, **kwargs).close()  # the temporary file existed before the failure
            raise error
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runfolder, "open", failing_open, raising=False)
    line = refused(resume(run_copy, generations=2), "gen_0002.json", "--resume")
    assert error.strerror in line
    assert {p.name: p.read_bytes() for p in (run_copy / "snapshots").glob("gen_*.json")} == earlier
    assert not list(run_copy.rglob("*.tmp"))

    monkeypatch.undo()  # space freed: the run continues from generation 1
    monkeypatch.setattr(os, "system", lambda command: 0)
    result = resume(run_copy, generations=2)
    assert result.exit_code == 0, result.output
    assert (run_copy / "snapshots" / "gen_0002.json").exists()


def test_a_full_disk_under_the_archive_stops_the_run_with_one_line(run_copy, monkeypatch):
    import gpnas.runs.archive as archive_module

    class FullDisk:
        """A connection whose inserts fail as SQLite's do on a full disk."""

        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("INSERT OR REPLACE"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __enter__(self):
            return self.db.__enter__()

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.db, name)

    real_init = archive_module.Archive.__init__

    def init(self, path):
        real_init(self, path)
        self._db = FullDisk(self._db)

    monkeypatch.setattr(archive_module.Archive, "__init__", init)
    before = {p.name: p.read_bytes() for p in (run_copy / "snapshots").glob("gen_*.json")}
    refused(resume(run_copy, generations=2), "database or disk is full", "--resume")
    assert {p.name: p.read_bytes() for p in (run_copy / "snapshots").glob("gen_*.json")} == before


def test_an_out_folder_that_cannot_be_created_is_one_line(tmp_path, tiny_corpus_dir):
    (tmp_path / "file").write_text("not a folder")
    refused(cli("evolve", "--preset", "micro", "--backend", "serial", "--data-dir", tiny_corpus_dir,
                "--out", tmp_path / "file" / "run"), "file")


# ------------------------------------------------------------------ issue 24: inputs that lost or hid something

@pytest.mark.parametrize("damage", ["deleted", "empty file", "no evaluations"])
def test_a_resume_whose_archive_is_missing_or_empty_is_refused(run_copy, damage):
    """Snapshots say generations were evaluated, but the archive that held them is gone:
    a resume would silently train them again and end elsewhere; it refuses in one line."""
    archive = run_copy / "archive.sqlite"
    if damage == "no evaluations":
        with sqlite3.connect(archive) as db:
            db.execute("DELETE FROM evaluations")
        db.close()
    else:
        for suffix in ("", "-wal", "-shm"):
            (run_copy / f"archive.sqlite{suffix}").unlink(missing_ok=True)
        if damage == "empty file":
            archive.write_bytes(b"")
    before = tree(run_copy)
    line = refused(resume(run_copy), "archive.sqlite", "finished generation", "--out")
    assert ("is missing" in line) == (damage == "deleted")
    assert tree(run_copy) == before


def test_resume_with_out_is_refused(run_copy):
    before = tree(run_copy)
    other = run_copy.parent / "other"
    result = cli("evolve", "--resume", run_copy, "--out", other, "--backend", "serial", "--threads", "1",
                 "--data-dir", run_copy.parent / "corpus")
    refused(result, "--out", "--resume", code=2)
    assert not other.exists() and tree(run_copy) == before


def test_a_prediction_that_is_not_finite_is_null_with_a_reason(tmp_path, curves_file, monkeypatch):
    """Should a prediction ever overflow, its line is still JSON: null and why (JSON has no NaN)."""
    import numpy as np

    from gpnas.predict.predictor import CurvePredictor

    real = CurvePredictor.predict
    monkeypatch.setattr(CurvePredictor, "predict",
                        lambda self, curves, **kw: np.where(np.arange(len(curves)) == 0, np.nan,
                                                            real(self, curves, **kw)))
    (tmp_path / "p.json").write_text(json.dumps(predictor_dict()))
    result = cli("predictors", "predict", "--predictor", tmp_path / "p.json", "--curves", curves_file)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert "NaN" not in result.output
    assert lines[0]["prediction"] is None and "finite" in lines[0]["reason"]
    assert all(isinstance(line["prediction"], float) and "reason" not in line for line in lines[1:])
