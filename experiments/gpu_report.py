"""The report of experiments/gpu_check.sh: report.json and report.md from the raw outputs
in REPORT_DIR (machine.txt, steps.tsv, gpu_tests.txt, baby_gpt.json, evolve.json).

    python3 experiments/gpu_report.py REPORT_DIR

MFU is nanoGPT's: training FLOPs per token (6 N + 12 L d T, ``gpnas train --json``'s
``flops_per_token``) times training tokens per second, over the GPU's dense bf16 peak
(PEAKS below, or the PEAK_TFLOPS environment variable).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NANOGPT_BEST_VAL_LOSS = 1.47  # config/train_shakespeare_char.py, as nanoGPT's README reports it
# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity), from the vendors' data sheets; the first
# key found in the GPU's name wins, so the more specific names come first.
PEAKS = [("H200", 989), ("H100 PCIe", 756), ("H100", 989), ("GH200", 989), ("A100", 312), ("A800", 312),
         ("L40S", 362), ("L40", 181), ("L4", 121), ("A10G", 70), ("A10", 125), ("A6000", 155),
         ("RTX 4090", 165), ("RTX 3090", 71)]


def peak_tflops(gpu: str) -> float | None:
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"])
    return next((float(tflops) for key, tflops in PEAKS if key in gpu), None)


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def make_report(out: Path) -> dict:
    machine = (out / "machine.txt").read_text().splitlines() if (out / "machine.txt").exists() else []
    gpu = machine[0].split(",")[0].strip() if machine else "unknown GPU"
    peak = peak_tflops(gpu)
    steps = {}
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, millis = line.split("\t")
        steps[name] = {"exit": int(rc), "wall_s": round(int(millis) / 1000, 1),
                       "status": "ok" if rc == "0" else ("timed out" if rc in ("124", "137") else "failed")}
    tests = (out / "gpu_tests.txt").read_text().strip().splitlines() if (out / "gpu_tests.txt").exists() else []
    report = {"gpu": gpu, "machine": machine, "peak_bf16_tflops": peak, "steps": steps,
              "gpu_tests": tests[-1] if tests else "no output"}
    baby = _load(out / "baby_gpt.json")
    if baby:
        tokens_s = baby["train_tokens_per_s"]
        mfu = baby["flops_per_token"] * tokens_s / (peak * 1e12) if peak else None
        memory = baby.get("peak_memory_bytes")
        report["baby_gpt"] = {
            "best_val_loss": baby["best_val_loss"], "nanogpt_best_val_loss": NANOGPT_BEST_VAL_LOSS,
            "within_0.02_of_nanogpt": abs(baby["best_val_loss"] - NANOGPT_BEST_VAL_LOSS) <= 0.02,
            "final_train_loss": baby["final_train_loss"], "train_tokens_per_s": tokens_s,
            "flops_per_token": baby["flops_per_token"], "mfu": mfu,
            "mfu_at_least_40pc": None if mfu is None else mfu >= 0.4,
            "total_train_time_s": baby["total_train_time_s"],
            "inference_tokens_per_s": baby["avg_inference_tokens_per_s"],
            "peak_memory_gib": memory / 2**30 if memory else None,
            "n_params": baby["n_params"], "steps": baby["curve"]["eval_steps"][-1],
        }
    evolve = _load(out / "evolve.json")
    if evolve:
        best = evolve.get("best_architecture") or {}
        report["evolve"] = {"best_arch": best.get("arch"), "best_final_val_loss": best.get("final_val_loss"),
                            "compute": evolve.get("compute"), "timing": evolve.get("timing"),
                            "failures": len(evolve.get("failures", [])), "cache": evolve.get("cache")}
    return report


def _f(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render(report: dict) -> str:
    lines = [f"# gpnas GPU check on {report['gpu']}", "",
             "Command: `experiments/gpu_check.sh`; machine: " + "; ".join(report["machine"]), "",
             "| step | status | wall time (s) |", "|---|---|---|"]
    lines += [f"| {name} | {s['status']} (exit {s['exit']}) | {s['wall_s']} |" for name, s in report["steps"].items()]
    lines += ["", f"gpu tests: {report['gpu_tests']}", ""]
    b = report.get("baby_gpt")
    if b:
        mfu = None if b["mfu"] is None else 100 * b["mfu"]
        lines += [f"## Baby GPT (the shakespeare-char reference, {b['steps']} steps)", "",
                  f"- best val loss {b['best_val_loss']:.4f} (nanoGPT {b['nanogpt_best_val_loss']}; "
                  f"within 0.02: {b['within_0.02_of_nanogpt']})",
                  f"- final train loss {b['final_train_loss']:.4f}",
                  f"- train tokens/s {b['train_tokens_per_s']:,.0f}; {b['flops_per_token'] / 1e6:.1f} MFLOP per token",
                  f"- MFU {_f(mfu, '.1f')} % of {_f(report['peak_bf16_tflops'], 'g')} TFLOP/s dense bf16 "
                  f"(at least 40 %: {b['mfu_at_least_40pc']})",
                  f"- train time {b['total_train_time_s']:.1f} s; inference "
                  f"{_f(b['inference_tokens_per_s'], ',.0f')} tokens/s",
                  f"- peak memory {_f(b['peak_memory_gib'], '.2f')} GiB; {b['n_params']:,} parameters", ""]
    else:
        lines += ["## Baby GPT: no result (see log.txt)", ""]
    e = report.get("evolve")
    if e:
        lines += ["## One generation of `gpnas evolve --preset shakespeare-char` (600-step full runs, 8 males)", "",
                  f"- best architecture {e['best_arch']}, final val loss {_f(e['best_final_val_loss'], '.4f')}",
                  f"- compute {e['compute']}", f"- timing {e['timing']}",
                  f"- failures {e['failures']}, cache {e['cache']}", ""]
    else:
        lines += ["## Evolve: no result (see log.txt)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 experiments/gpu_report.py REPORT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    report = make_report(out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
