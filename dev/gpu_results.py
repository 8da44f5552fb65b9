#!/usr/bin/env python
"""The results session: what a lent GPU runs first, in one call of at most 9 minutes.

Stages, each in a child process with its own time limit (a slow stage costs only itself):
  compare          the exact fp32 path vs the fast path of the training stages: step time, and
                   loss and accuracy after the same 300 steps from the same seed (the bf16 deviation)
  cifar10_4000     CIFAR-10 @ 4000 labels, fold 1, WRN-28-2, official recipe under --time-budget
  cifar10_250      CIFAR-10 @ 250, the same
  cifar10_250_cta  CIFAR-10 @ 250 with CTAugment (--strong-augment cta)
  fer_70, fer_700  FER2013, WRN-28-2, 70 / 700 labels (10 / 100 per class on average), FixMatch vs
                   supervised on the same labels, equal time budgets
  fer_release      the released FER2013 model's recipe (configs/fer2013.yaml) under the time left:
                   its retraining on the official wiring (compare with the zoo model before replacing it)
  bench            `fixmatch bench` of the training step, one row per speed switch added to the plain
                   eager fp32 step (WRN-28-2, CIFAR-10 32x32x3), and the augmentation alone, each row a child
  tta_250          time to accuracy on the FULL CIFAR-10 (50,000 train images: needs cifar10_device and
  tta_4000         cifar10_rest in --data) at 250 / 4000 labels: FixMatch, FlexMatch, FreeMatch and the
                   fast recipe, equal wall-clock budgets each
A stage whose data file is not in --data is skipped with one line saying so. The training stages
plan nothing themselves: `fixmatch train --time-budget` measures its own speed and ends on time;
the child's limit (budget + MARGIN_S) is the safety net, and a killed run still yields its last
checkpoint.

Everything goes to --out ($OUT) as it comes: a stage's run directories live in $OUT/<stage>/ while
it runs; when it ends they are packed into $OUT/<stage>.tar (logs, config, split, metrics.jsonl,
summary.json, the EMA weights as model.safetensors; the full .pt checkpoints stay out: ~18 MB each,
over the device tool's 16 MiB per returned file) and gpu_results.json / gpu_results.md are
rewritten. The tool returns at most 8 files, so a call runs at most 5 stages.

The 64 MiB carry limit fits one data file per call (`dev/gpu_results_data.py` prepares them):
  python dev/gpu_results.py --data .gpu/cifar --out $OUT            (carry .gpu/cifar)
  python dev/gpu_results.py --data .gpu/fer --out $OUT --minutes M  (carry .gpu/fer)
The full CIFAR-10 takes two calls, the second at once (a machine idle for ~30 s is given back): the
first leaves cifar10_device on the machine, the second brings cifar10_rest and trains on both:
  call 1:  mkdir -p /root/stash && cp .gpu/cifar/cifar10_device.npz.xz /root/stash/          (carry .gpu/cifar)
  call 2:  cp /root/stash/cifar10_device.npz.xz .gpu/cifar_rest/ && python dev/gpu_results.py
           --data .gpu/cifar_rest --out $OUT --stages tta_250 --minutes 9                       (carry .gpu/cifar_rest)

CPU dry run (what tests/dev/test_gpu_results.py does):
  python dev/gpu_results.py --tiny --device cpu --data DIR --out /tmp/out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the device machine runs the source tree (nothing installed)
sys.path.insert(1, str(REPO / "benchmarks"))  # plot_curves

# Measured on the H100 (benchmarks/results/gpu_h100_2026-11-26.log and gpu_h100_2026-11-27/, BENCHMARKS.md).
# Every time limit below is made from these; nothing else is assumed.
MEASURED = dict(
    ms_32_graph=12.51,  # WRN-28-2 32x32x3 (official wiring), every switch incl. CUDA graphs, median (11-27 compare)
    ms_32_plain=76.30,  # the same step, plain eager fp32 (the exact path) (11-27 compare)
    ms_48_graph=25.79,  # WRN-28-2 48x48x1, every switch, inside the fer_70 FixMatch run (11-27)
    ms_32_eager=29.06,  # WRN-28-2 32x32x3, bf16+channels-last+fused, no compile (11-27 step_profile)
    ms_32_cta_eager=39.85,  # the same with CTAugment, inside the cifar10_250_cta run (11-27)
    ms_48_eager=44.35,  # WRN-28-2 48x48x1, bf16+channels-last+fused, no compile (11-26, old wiring)
    graph_start_s=37.0,  # bench child, CUDA graphs: start, data, compile, capture, 55 steps (72.5->109.4 s, 11-26)
    eager_start_s=6.0,  # the FER2013 training child: start to its first line, data loaded (151.2->157.1 s, 11-26)
    compare_child_s=88.5,  # the compare child had written its report when its 88 s limit killed it (11-27)
    exact_300_s=24.78,  # of it, the exact path's 300 steps (11-27 compare.json)
)
MARGIN_S = 15.0  # of each child's limit outside its --time-budget: interpreter start, imports, last checkpoint
RESERVE_S = 15.0  # kept free at the end of the call: packing, the result files
COMPARE_STEPS, TIMED_STEPS = 300, 40

# The paper (Sohn et al. 2020, Table 2): accuracy = 100 - error rate, and the error's std over 5 folds.
PAPER = {
    ("cifar10", 4000, "ra"): (95.74, 0.05),
    ("cifar10", 250, "ra"): (94.93, 0.65),
    ("cifar10", 40, "ra"): (86.19, 3.37),
    ("cifar10", 4000, "cta"): (95.69, 0.15),
    ("cifar10", 250, "cta"): (94.93, 0.33),
    ("cifar10", 40, "cta"): (88.61, 3.35),
}

CIFAR_FILE, CIFAR_REST_FILE, FER_FILE = "cifar10_device.npz.xz", "cifar10_rest.npz.xz", "fer2013.npz.xz"
# The fast path of the training stages: every switch (the H100's fastest step, 12.5 ms); EAGER for
# runs too short to earn back the compilation (see speed_switches) and as the fallback.
FAST = dict(fast="on", cuda_graph="on")
EAGER = dict(fast="on", compile="off", cuda_graph="off")
CIFAR = dict(dataset="cifar10", model="wrn28_2", fold=1, seed=0)
FER = dict(dataset="fer2013", model="wrn28_2", fold=1, seed=0, eval_every=256)  # short runs: more points
TTA_ALGORITHMS = ("fixmatch", "flexmatch", "freematch")
# beside them: --recipe fast is FlexMatch today (the CPU evidence, RESULTS.md); the curriculum batch
# size forwarded the fewest images there but a CPU step does not scale with images: the GPU decides
TTA_RECIPES: dict[str, dict] = {
    "flexmatch_curriculum": dict(algorithm="flexmatch", unlabeled_batch_curriculum="linear")
}
# The released model's recipe, one source: configs/fer2013.yaml, its --steps replaced by the stage's budget.
FER_RELEASE = {k: v for k, v in yaml.safe_load((REPO / "configs/fer2013.yaml").read_text()).items() if k != "steps"}


@dataclass(frozen=True)
class Stage:
    name: str
    needs: str  # the file in --data it reads
    seconds: float | None  # its time limit; None = an equal share of the time left
    runs: dict = field(default_factory=dict)  # run name -> TrainConfig fields (empty: a child of `kind`)
    also: tuple[str, ...] = ()  # further files it reads from --data
    kind: str = "train"  # train (its runs), compare (exact vs fast), bench (the switches' step times)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.needs, *self.also)


def time_to_accuracy(labels: int) -> dict:
    """The FixMatch family on the full CIFAR-10 at `labels` labels, one run each (equal budgets)."""
    runs = {a: dict(CIFAR, num_labels=labels, algorithm=a) for a in TTA_ALGORITHMS}
    return {**runs, **{name: dict(CIFAR, num_labels=labels, **fields) for name, fields in TTA_RECIPES.items()}}


def compare_seconds() -> float:
    """The compare child's measured wall time (two paths' start, 300 steps, evaluations, timing) plus a
    second exact path: its 300 steps and its 40 timed ones."""
    m = MEASURED
    return round(m["compare_child_s"] + m["exact_300_s"] + TIMED_STEPS * m["ms_32_plain"] / 1000 + MARGIN_S)


STAGES = {
    s.name: s
    for s in [
        Stage("compare", CIFAR_FILE, compare_seconds(), kind="compare"),  # exact fp32 vs the fast path, same seed
        Stage("bench", CIFAR_FILE, None, kind="bench"),
        Stage("cifar10_4000", CIFAR_FILE, 210.0, {"fixmatch": dict(CIFAR, num_labels=4000)}),
        Stage("cifar10_250", CIFAR_FILE, 150.0, {"fixmatch": dict(CIFAR, num_labels=250)}),
        Stage("cifar10_250_cta", CIFAR_FILE, None, {"fixmatch": dict(CIFAR, num_labels=250, strong_augment="cta")}),
        Stage("fer_70", FER_FILE, None, {a: dict(FER, num_labels=70, algorithm=a) for a in ("fixmatch", "supervised")}),
        Stage(
            "fer_700", FER_FILE, None, {a: dict(FER, num_labels=700, algorithm=a) for a in ("fixmatch", "supervised")}
        ),
        Stage("fer_release", FER_FILE, None, {"fixmatch": dict(FER_RELEASE, fold=1)}),  # every image labeled
        Stage("tta_250", CIFAR_REST_FILE, None, time_to_accuracy(250), also=(CIFAR_FILE,)),
        Stage("tta_4000", CIFAR_REST_FILE, None, time_to_accuracy(4000), also=(CIFAR_FILE,)),
    ]
}

# --tiny: the same stages on CPU in seconds (tests): a small network, a small batch, short limits.
TINY_RUN = dict(model="cnn_small", batch_size=8, mu=2, eval_every=10, fast="off", cuda_graph="off", threads=1)
TINY_LABELS = {4000: 40, 250: 20, 70: 14, 700: 21, 28709: 28}
# The budget counts from the child's start (imports and data included): the margin is for what a loaded
# machine adds after the plan (the last checkpoint, the exit).
TINY_SECONDS, TINY_MARGIN_S, TINY_COMPARE_STEPS, TINY_TIMED_STEPS = 52.0, 22.0, 10, 5
TINY_BUDGET_S = 30.0  # a dry run's --time-budget at most: it shows the wiring, not what minutes buy

T0 = time.time()


def log(*parts) -> None:
    line = f"[{time.time() - T0:6.1f}s] " + " ".join(str(p) for p in parts)
    print(line, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as f:
            f.write(line + "\n")


LOG_FILE: Path | None = None


# ---- the plan -------------------------------------------------------------------------------------
def plan(opts) -> list[tuple[Stage, float | None, str]]:
    """(stage, its time limit, why) in order. A limit of None: skipped (why says so); a limit of 0:
    an equal share of the time left when the stage starts (`share`)."""
    out = []
    for s in (STAGES[n] for n in opts.stages):
        missing = [f for f in s.files if not (Path(opts.data) / f).is_file()]
        if missing:
            out.append((s, None, f"skipped: {', '.join(missing)} not in {opts.data}"))
            continue
        limit = opts.stage_seconds.get(s.name, TINY_SECONDS if opts.tiny else s.seconds)
        out.append((s, limit or 0.0, "its planned limit" if limit else "an equal share of the time left"))
    return out


def share(stages: list[tuple[Stage, float | None, str]], time_left: float) -> float:
    """The limit of the next share stage: the time left after the fixed limits still to come, split
    equally among the share stages still to come."""
    fixed = sum(limit for _, limit, _ in stages if limit)
    shares = sum(1 for _, limit, _ in stages if limit == 0.0)
    return (time_left - fixed) / max(shares, 1)


def expected(stage: Stage, limit: float, tiny: bool) -> str:
    """What the limit buys at the measured speed (a log line, so the plan can be checked)."""
    if tiny or not stage.runs:
        return ""
    seconds = limit / len(stage.runs) - MARGIN_S
    m, size = MEASURED, "48" if stage.needs == FER_FILE else "32"
    graph = speed_switches(stage.needs, seconds) == FAST
    ms, start = (m[f"ms_{size}_graph"], m["graph_start_s"]) if graph else (m[f"ms_{size}_eager"], m["eager_start_s"])
    if any(run.get("strong_augment") == "cta" for run in stage.runs.values()):
        ms = m["ms_32_cta_eager"] if not graph else ms  # CTA with CUDA graphs: not measured yet
    steps = max(0.0, seconds - start) * 1000 / ms
    return (
        f"expect ~{steps:,.0f} FixMatch steps per run ({'CUDA graphs' if graph else 'eager bf16'}: "
        f"{ms} ms/step after ~{start:.0f} s of start-up)"
    )


# ---- child processes ------------------------------------------------------------------------------
def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


CURRENT: subprocess.Popen | None = None  # the child running now, for the signal handler


def run_child(cmd: list[str], limit: float, log_path: Path) -> dict:
    """Run cmd in its own process group (same session: the device tool still ends it with the call),
    output to log_path; kill the whole group (compile workers included) at the limit."""
    global CURRENT
    t = time.time()
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    with open(log_path, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        CURRENT = proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(), **group)
        try:
            rc = proc.wait(timeout=max(limit, 1.0))
            status = "finished" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            rc, status = None, f"killed at its {limit:.0f} s limit"
        kill_group(proc)  # at the limit; after an exit, whatever the child left behind in its group
        CURRENT = None
    return {
        "status": status,
        "returncode": rc,
        "pid": proc.pid,
        "limit_s": round(limit, 1),
        "wall_s": round(time.time() - t, 1),
    }


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's group, SIGKILL to what is left 10 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if sig == signal.SIGTERM:
            time.sleep(0.2)  # the group's other members get the same chance as the child


def on_signal(signum, _frame) -> None:
    """The call is being ended: take the running child's group down with this process."""
    if CURRENT is not None:
        kill_group(CURRENT)
    raise SystemExit(128 + signum)


# ---- stages ---------------------------------------------------------------------------------------
def run_stage(stage: Stage, limit: float, opts, env: dict) -> dict:
    live = Path(opts.out) / stage.name
    live.mkdir(parents=True, exist_ok=True)
    result = {"stage": stage.name, "limit_s": round(limit, 1), "runs": []}
    if stage.kind == "compare":
        result["runs"].append(run_compare(live / "compare", limit, opts))
    elif stage.kind == "bench":
        result["runs"] += run_bench(live, limit, opts)
    else:
        per_run = limit / len(stage.runs)  # equal budgets
        for name, fields in stage.runs.items():
            result["runs"].append(run_training(stage, name, fields, live / name, per_run, opts, env))
    result["tar"] = pack(live, Path(opts.out) / f"{stage.name}.tar")
    return result


def train_fields(stage: Stage, fields: dict, run_dir: Path, limit: float, opts) -> dict:
    cfg = dict(fields, data_dir=str(Path(opts.data).resolve()), out=str(run_dir), progress=False, device=opts.device)
    margin = TINY_MARGIN_S if opts.tiny else MARGIN_S
    budget = max(limit - margin, 1.0)
    cfg["time_budget"] = round((min(budget, opts.tiny_budget) if opts.tiny else budget) / 60, 4)
    if opts.tiny:
        cfg.update(TINY_RUN, num_labels=TINY_LABELS[fields["num_labels"]])
    if stage.name in opts.ignore_budget:  # test hook: no budget, so the child runs into its limit
        cfg.update(time_budget=None, steps=10**7)
    return cfg


def speed_switches(needs: str, seconds: float) -> dict:
    """CUDA graphs cost a compile and a capture (~37 s measured) and then run a step 1.75-2.3x
    faster; a run shorter than the break-even trains more steps on the eager bf16 path."""
    m, size = MEASURED, "48" if needs == FER_FILE else "32"
    graph = (seconds - m["graph_start_s"]) / m[f"ms_{size}_graph"]
    eager = (seconds - m["eager_start_s"]) / m[f"ms_{size}_eager"]
    return dict(FAST) if graph >= eager else dict(EAGER)


def run_training(
    stage: Stage, name: str, fields: dict, run_dir: Path, limit: float, opts, env: dict, switches: dict | None = None
) -> dict:
    from fixmatch.config import TrainConfig, save_yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    switches = switches or speed_switches(stage.needs, limit - MARGIN_S)
    cfg = train_fields(stage, {**fields, **switches}, run_dir, limit, opts)
    save_yaml(TrainConfig(**cfg), run_dir / "requested.yaml")
    log(f"{stage.name}/{name}: limit {limit:.0f} s, --time-budget {cfg['time_budget']} min")
    cmd = [sys.executable, "-m", "fixmatch", "train", "--config", str(run_dir / "requested.yaml")]
    ended = run_child(cmd, limit, run_dir / "train.log")
    row = {
        "stage": stage.name,
        "run": name,
        "command": command_line(cfg),
        **ended,
        **read_run(run_dir),
        "gpu": env.get("gpu"),
        "torch": env.get("torch"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    # the paper's figure for the stage's setting (a --tiny run trains other label counts: none)
    fixmatch_run = fields.get("algorithm", "fixmatch") == "fixmatch" and not fields.get("recipe")
    paper_key = (fields["dataset"], fields["num_labels"], row["augmentation"])
    row["paper"] = PAPER.get(paper_key) if fixmatch_run and not opts.tiny else None  # the FixMatch paper's
    row["export"] = export_model(run_dir, row)
    row["curve"] = draw_curve(run_dir, f"{stage.name}/{name}")
    log(f"{stage.name}/{name}: {ended['status']} after {ended['wall_s']} s; " + brief(row))
    left = limit - ended["wall_s"]
    if (
        ended["status"].startswith("failed")
        and not row["evaluations"]
        and switches != EAGER
        and left >= (5 if opts.tiny else 60)
    ):
        log(f"{stage.name}/{name}: failed before its first evaluation; once more on the eager path ({left:.0f} s)")
        retry = run_training(
            stage, name + "-eager", fields, run_dir.parent / (name + "-eager"), left, opts, env, switches=dict(EAGER)
        )
        return {**retry, "first_try": {k: row[k] for k in ("status", "wall_s", "command")}}
    return row


def command_line(cfg: dict) -> str:
    """The `fixmatch train` command equivalent to the run's requested config."""
    skip = {"out", "progress", "data_dir"}
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in cfg.items() if k not in skip and v is not None]
    return "fixmatch train " + " ".join(flags) + " --data-dir DATA"


def read_run(run_dir: Path) -> dict:
    """The run's figures: its summary.json, or (a killed run) its last evaluation in metrics.jsonl."""
    history = read_history(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    config = {}
    if (run_dir / "requested.yaml").is_file():
        config = yaml.safe_load((run_dir / "requested.yaml").read_text())
    last = history[-1] if history else {}
    accs = [r["accuracy"] for r in history[-20:]]
    return {
        "dataset": config.get("dataset"),
        "algorithm": config.get("algorithm") or "fixmatch",
        "num_labels": summary.get("num_labels", config.get("num_labels")),
        "fold": config.get("fold"),
        "model": config.get("model"),
        "augmentation": config.get("strong_augment", "ra"),
        "accuracy": summary.get("accuracy", last.get("accuracy")),
        "median_last20": summary.get("median_last20", statistics.median(accs) if accs else None),
        "evaluations": len(history),
        "steps": last.get("step"),
        "planned_steps": summary.get("planned_steps"),
        "time_budget_minutes": config.get("time_budget"),
        "ms_per_step": summary.get("ms_per_step"),
        "wall_seconds_this_session": summary.get("wall_seconds_this_session"),
        "mask_rate": last.get("mask_rate"),
        "pseudo_label_accuracy": last.get("pseudo_label_accuracy"),
        "speedups": summary.get("speedups"),
        "summary": bool(summary),
    }


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return rows


def export_model(run_dir: Path, row: dict) -> str:
    """The last checkpoint's EMA model as model.safetensors (on the CPU, in this process)."""
    if not (run_dir / "last.pt").is_file():
        return "no checkpoint"
    try:
        from fixmatch.inference.loading import load_model, write_safetensors

        training = {k: row.get(k) for k in ("steps", "planned_steps", "accuracy", "status", "gpu", "torch")}
        write_safetensors(load_model(str(run_dir / "last.pt")), run_dir / "model.safetensors", {"training": training})
        return "model.safetensors"
    except Exception as e:  # noqa: BLE001 - the figures matter more than the file
        return f"failed: {type(e).__name__}: {e}"


def draw_curve(run_dir: Path, name: str) -> str:
    """curve.png (accuracy vs training time) beside the run's metrics, so it travels in the tar."""
    try:
        import plot_curves  # benchmarks/plot_curves.py

        ((_, recs, summary),) = plot_curves.curves(run_dir)
        if not recs:
            return "no evaluations"
        plot_curves.plot(name, recs, plot_curves.title_of(name, summary), run_dir / "curve.png")
        return "curve.png"
    except Exception as e:  # noqa: BLE001 - e.g. no matplotlib: the curve can be drawn later from metrics.jsonl
        return f"failed: {type(e).__name__}: {e}"


def brief(row: dict) -> str:
    acc = row.get("accuracy")
    return (f"accuracy {100 * acc:.2f}% at step {row.get('steps')}" if acc is not None else "no evaluation") + (
        f", median of last 20 {100 * row['median_last20']:.2f}%" if row.get("median_last20") is not None else ""
    )


def run_compare(run_dir: Path, limit: float, opts) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"data": str(Path(opts.data).resolve()), "device": opts.device, "tiny": opts.tiny, "out": str(run_dir)}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    log(f"compare: limit {limit:.0f} s")
    ended = run_child(
        [sys.executable, str(Path(__file__).resolve()), "--child-compare", str(run_dir / "spec.json")],
        limit,
        run_dir / "compare.log",
    )
    report = json.loads((run_dir / "compare.json").read_text()) if (run_dir / "compare.json").is_file() else {}
    log(f"compare: {ended['status']} after {ended['wall_s']} s; " + json.dumps(report.get("difference")))
    return {"stage": "compare", "run": "compare", **ended, **report}


# `fixmatch bench` rows: each adds one speed switch to the plain eager fp32 step (the former gpu_check.py's table)
BENCH_VARIANTS = {
    "plain": dict(fast="off"),
    "channels_last": dict(fast="auto", amp="off", channels_last="on", compile="off", fused_optimizer="off"),
    "bf16": dict(fast="auto", amp="on", channels_last="off", compile="off", fused_optimizer="off"),
    "fused_sgd": dict(fast="auto", amp="off", channels_last="off", compile="off", fused_optimizer="on"),
    "bf16+cl+fused": dict(fast="auto", amp="on", channels_last="on", compile="off", fused_optimizer="on"),
    "all (compile)": dict(fast="on", cuda_graph="off"),
    "all+cuda_graph": dict(fast="on", cuda_graph="on"),
}
BENCH_ROWS = [*BENCH_VARIANTS, "plain augment", "all+cuda_graph augment"]
TINY_BENCH_ROWS = ["plain", "bf16+cl+fused", "plain augment"]  # the CPU has no compile or CUDA graphs


def run_bench(live: Path, limit: float, opts) -> list[dict]:
    """One child per row (a failed CUDA-graph capture can leave its process's CUDA context unusable),
    each with an equal share of the stage's limit; its JSON line is the row."""
    rows, names = [], TINY_BENCH_ROWS if opts.tiny else BENCH_ROWS
    timing = ["--warmup", "2", "--steps", "3"] if opts.tiny else ["--warmup", "15", "--steps", "40"]
    shape = ["--model", "cnn_small", "--batch-size", "8", "--mu", "2"] if opts.tiny else ["--model", "wrn28_2"]
    for i, name in enumerate(names):
        variant, augment_only = name.removesuffix(" augment"), name.endswith(" augment")
        flags = [f for k, v in BENCH_VARIANTS[variant].items() for f in ("--" + k.replace("_", "-"), v)]
        cmd = [sys.executable, "-m", "fixmatch", "bench", "--json", "--device", opts.device, "--dataset", "cifar10"]
        cmd += ["--data-dir", str(Path(opts.data).resolve()), *shape, *timing, *flags]
        cmd += ["--augment-only"] if augment_only else []
        log_path = live / f"bench_{i}.log"
        ended = run_child(cmd, limit / len(names), log_path)
        lines = [x for x in log_path.read_text().splitlines() if x.startswith("{")]
        row = json.loads(lines[-1]) if ended["status"] == "finished" and lines else {}
        rows.append({"stage": "bench", "run": name, **ended, **row})
        log(f"bench {name}: {ended['status']}, {(row.get('ms_per_step') or {}).get('median', 'no figure')} ms/step")
    return rows


NUDGE = 1e-6  # relative size of the exact reference's weight perturbation


def nudge(trainer) -> None:
    """Move every weight by NUDGE of itself, randomly (seeded), and start the EMA from the moved weights."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.mul_(1 + NUDGE * torch.randn(p.shape, generator=g).to(p.device))
    trainer.ema.model.load_state_dict(trainer.model.state_dict())


def difference(paths: dict, deltas: dict, name: str) -> dict:
    """How far path `name` ended from the exact fp32 path: loss, accuracy, and the total update."""
    import torch

    exact, other = paths["exact_fp32"], paths[name]
    a, b = deltas["exact_fp32"], deltas[name]
    return {
        "loss_last50_rel": abs(other["loss_last50"] - exact["loss_last50"]) / max(abs(exact["loss_last50"]), 1e-12),
        "raw_accuracy_points": 100 * (other["accuracy"]["raw"] - exact["accuracy"]["raw"]),
        "ema_accuracy_points": 100 * (other["accuracy"]["ema"] - exact["accuracy"]["ema"]),
        "update_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
        "update_rel_diff": float((a - b).norm() / a.norm().clamp_min(1e-12)),
    }


def child_compare(spec_path: str) -> None:
    """(child) The exact fp32 path and the fast path: same seed, same labels, same batches, N steps each."""
    import torch

    from fixmatch.config import TrainConfig
    from fixmatch.cpus import thread_count
    from fixmatch.data import load_data
    from fixmatch.training.bench import flat_params, summarize, timed
    from fixmatch.training.devices import pick_device
    from fixmatch.training.resolve import resolve
    from fixmatch.training.train import make_trainer, pick_labels

    spec = json.loads(Path(spec_path).read_text())
    tiny = spec["tiny"]
    base = dict(
        dataset="cifar10",
        data_dir=spec["data"],
        num_labels=4000,
        fold=1,
        model="wrn28_2",
        seed=0,
        device=spec["device"],
        progress=False,
    )
    # exact_fp32_nudged is the yardstick: the exact path from weights moved by NUDGE (relative). Over 300
    # steps any tiny difference grows; the fast path's drift means something only beside this one's.
    paths = {"exact_fp32": dict(fast="off"), "exact_fp32_nudged": dict(fast="off"), "fast": dict(FAST)}
    if tiny:
        base.update(TINY_RUN, num_labels=TINY_LABELS[4000])
        paths["fast"] = dict(fast="on", compile="off", cuda_graph="off")  # no CPU compile in a test
    steps, timed_steps = (TINY_COMPARE_STEPS, TINY_TIMED_STEPS) if tiny else (COMPARE_STEPS, TIMED_STEPS)
    data, report, deltas = None, {"steps": steps, "paths": {}}, {}
    for name, switches in paths.items():
        cfg = resolve(TrainConfig(**{**base, **switches}))
        torch.set_num_threads(thread_count(cfg.threads))  # as train() does
        data = data or load_data(cfg)
        device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        trainer = make_trainer(cfg, data, pick_labels(cfg, data), device)
        if name.endswith("_nudged"):
            nudge(trainer)
        start = flat_params(trainer.model)
        t, losses, total = time.perf_counter(), [], 0.0
        for _ in range(steps):
            trainer.step()
            now = float(trainer.sums["loss"])  # one sync per step: fine for a comparison
            losses.append(now - total)
            total = now
        seconds = time.perf_counter() - t
        deltas[name] = flat_params(trainer.model) - start
        accuracy = {"ema": trainer.evaluate()["accuracy"], "raw": trainer.evaluate(trainer.model)["accuracy"]}
        ms = summarize(timed(trainer.step, timed_steps, device))  # after the evaluation: training goes on
        report["paths"][name] = {
            "speedups": trainer.speedups.describe(),
            "loss": losses,
            "loss_last50": statistics.fmean(losses[-50:]),
            "accuracy": accuracy,
            "seconds_for_steps": round(seconds, 2),
            "ms_per_step": ms,
        }
        print(name, json.dumps({k: v for k, v in report["paths"][name].items() if k != "loss"}), flush=True)
        del trainer
    report["difference"] = difference(report["paths"], deltas, "fast")
    report["difference"]["speedup"] = (
        report["paths"]["exact_fp32"]["ms_per_step"]["median"] / report["paths"]["fast"]["ms_per_step"]["median"]
    )
    report["reference"] = difference(report["paths"], deltas, "exact_fp32_nudged")
    Path(spec["out"], "compare.json").write_text(json.dumps(report, indent=1))


# ---- packing and the result files -----------------------------------------------------------------
PACK_SKIP = (".pt", ".tmp")


def pack(live: Path, tar_path: Path) -> str:
    """The stage's run directories as one tar (the device tool returns at most 8 files), without the
    .pt checkpoints (the EMA weights travel as model.safetensors) or TensorBoard events."""
    try:
        with tarfile.open(tar_path, "w") as tar:
            for path in sorted(live.rglob("*")):
                rel = path.relative_to(live.parent)
                if path.is_file() and not path.name.endswith(PACK_SKIP) and "tb" not in rel.parts:
                    tar.add(path, arcname=str(rel))
        shutil.rmtree(live)
        return tar_path.name
    except OSError as e:  # leave the directory where it is: still better than nothing
        return f"failed: {e}"


def environment(device: str) -> dict:
    """Versions and the GPU's name, without starting CUDA in this process (the children use it)."""
    import platform

    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "cpus": os.cpu_count(),
    }
    env["gpu"] = f"cpu ({os.cpu_count()} cores)"
    if device.startswith("cuda"):
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
            env["nvidia_smi"] = smi
            env["gpu"] = smi.split(",")[0].strip() or "unknown GPU"
        except (OSError, subprocess.SubprocessError) as e:
            env["gpu"] = f"unknown GPU ({e})"
    return env


def pct(x) -> str:
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) else "—"


def markdown(results: dict) -> str:
    """The rows in RESULTS.md's shape, ready to paste, plus the compare stage's figures."""
    header = (
        "| dataset | labels | fold | augmentation | algorithm | accuracy | median of last 20 | steps | budget "
        "| GPU | date | paper | paper std | status |"
    )
    lines = [header, "|" + "---|" * 14]
    compare, bench = None, []
    for stage in results["stages"]:
        for r in stage.get("runs", []):
            if r.get("run") == "compare":
                compare = r
                continue
            if r.get("stage") == "bench":
                bench.append(r)
                continue
            paper = r.get("paper") or (None, None)
            budget = f"{r['time_budget_minutes']:g} min" if r.get("time_budget_minutes") else "none"
            lines.append(
                f"| {r.get('dataset')} | {r.get('num_labels')} | {r.get('fold')} | {r.get('augmentation')} "
                f"| {r.get('algorithm')} | {pct(r.get('accuracy'))} | {pct(r.get('median_last20'))} "
                f"| {r.get('steps')} | {budget} | {r.get('gpu')} | {r.get('date')} "
                f"| {paper[0] or '—'} | {paper[1] or '—'} | {r['status']} |"
            )
    for stage in results["stages"]:
        if stage.get("skipped"):
            lines.append(f"\n{stage['stage']}: {stage['skipped']}")
    if bench:
        lines.append("\n| bench row | ms per step | images/s | speedups | status |")
        lines.append("|---|---|---|---|---|")
        for r in bench:
            lines.append(
                f"| {r['run']} | {(r.get('ms_per_step') or {}).get('median', '—')} | {r.get('images_per_second', '—')} "
                f"| {r.get('speedups', '—')} | {r['status']} |"
            )
    if compare and compare.get("paths"):
        lines.append("\n| path (compare) | ms/step | loss, mean of last 50 steps | raw accuracy | EMA accuracy |")
        lines.append("|---|---|---|---|---|")
        for name, p in compare["paths"].items():
            lines.append(
                f"| {name} ({p['speedups']}) | {p['ms_per_step']['median']} | {p['loss_last50']:.4f} "
                f"| {pct(p['accuracy']['raw'])} | {pct(p['accuracy']['ema'])} |"
            )
        lines.append(f"\ndifference: {json.dumps(compare['difference'])}")
        if compare.get("reference"):  # the exact path from nudged weights: how far any tiny change drifts
            lines.append(f"\nreference (exact_fp32_nudged): {json.dumps(compare['reference'])}")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: Path) -> None:
    results["seconds"] = round(time.time() - T0, 1)
    (out / "gpu_results.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_results.md").write_text(markdown(results))


# ---- main ------------------------------------------------------------------------------------------
def parse_seconds(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in STAGES or not value:
            raise SystemExit(f"--stage-seconds wants NAME=SECONDS with NAME one of {', '.join(STAGES)}; got {item!r}")
        out[name] = float(value)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", default=".gpu/cifar", help="folder with cifar10_device.npz.xz (+ cifar10_rest.npz.xz), fer2013.npz.xz"
    )
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_results_out"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--minutes", type=float, default=9.0, help="the whole call's wall-clock limit")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, in order; from {', '.join(STAGES)}")
    p.add_argument("--stage-seconds", nargs="*", default=[], metavar="NAME=SECONDS", help="override a stage's limit")
    p.add_argument("--tiny", action="store_true", help="CPU dry run: small network and batch, limits of seconds")
    p.add_argument(
        "--tiny-budget",
        type=float,
        default=TINY_BUDGET_S,
        metavar="SECONDS",
        help=f"a dry run's --time-budget at most (default {TINY_BUDGET_S:g}; the full CIFAR-10's test set takes "
        "~13 s to evaluate on a CPU: give it 90)",
    )
    p.add_argument(
        "--ignore-budget",
        default="",
        help="test hook: these stages train without --time-budget, so their child runs into its limit and is killed",
    )
    p.add_argument("--child-compare", metavar="SPEC", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.stages = [s for s in opts.stages.split(",") if s]
    unknown = [s for s in opts.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    opts.stage_seconds = parse_seconds(opts.stage_seconds)
    opts.ignore_budget = {s for s in opts.ignore_budget.split(",") if s}
    return opts


def main(argv=None) -> int:
    global LOG_FILE
    opts = parse_args(argv)
    if opts.child_compare:
        child_compare(opts.child_compare)
        # On the H100 (11-27) the child had written its report and was still exiting at its limit:
        # skip the interpreter's teardown (compile workers, CUDA graph pools), nothing is left to save.
        sys.stdout.flush()
        os._exit(0)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    LOG_FILE = out / "gpu_results.log"
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    deadline = T0 + opts.minutes * 60 - RESERVE_S
    env = environment(opts.device)
    log("environment", json.dumps(env))
    results = {
        "environment": env,
        "measured_figures_used": MEASURED,
        "margin_s": MARGIN_S,
        "pid": os.getpid(),
        "stages": [],
    }
    stages = plan(opts)
    for i, (stage, limit, why) in enumerate(stages):
        if limit == 0.0:
            limit = share(stages[i:], deadline - time.time())
        if limit is not None:
            limit = min(limit, deadline - time.time())
            if limit < (5 if opts.tiny else 30):
                limit, why = None, "skipped: the call's time is used up"
        if limit is None:
            log(f"{stage.name}: {why}")
            results["stages"].append({"stage": stage.name, "skipped": why})
        else:
            log(f"== {stage.name}: {limit:.0f} s ({why}) {expected(stage, limit, opts.tiny)}")
            results["stages"].append(run_stage(stage, limit, opts, env))
        write_results(results, out)  # after every stage: a call cut short still returns what was done
    log(f"done in {time.time() - T0:.0f} s")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
