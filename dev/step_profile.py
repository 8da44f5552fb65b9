#!/usr/bin/env python
"""Where one training step's time goes on the device (issue 12, step 4): a torch.profiler trace of
WRN-28-2, B=64, mu=7 at 32x32x3 on synthetic data, under up to five sets of switches, each in a child
process with its own time limit:

  eager   bf16 + channels-last + fused SGD, no compile     (every kernel launched from Python)
  compile the same + torch.compile (default mode)          (BN/activation/optimizer fused by Inductor)
  graph   every switch: compile reduce-overhead + CUDA graphs (the training stages' path)
  stream  graph + --augment-stream (the next batch augmented on a second stream)
  autotune graph + --max-autotune (Inductor's tuned templates; a long compile)

Per configuration: the median wall time of a step, the augmentation alone, and the device time of
the profiled steps' kernels by kind (convolution, batch norm, elementwise, reduction, optimizer,
copies, Inductor-fused, other). Kernel time below the wall time is the launch gaps / host overhead.

  python dev/step_profile.py --out $OUT --configs eager,graph   (on the GPU: 43 s on 11-27)
  python dev/step_profile.py --device cpu --tiny --out /tmp/p (CPU dry run: operators, not kernels)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from gpu_results import run_child  # beside this file (dev/); importing it also puts src/ on the path

CONFIGS = {
    "eager": dict(fast="on", compile="off", cuda_graph="off"),
    "compile": dict(fast="on", compile="on", cuda_graph="off"),
    "graph": dict(fast="on", compile="on", cuda_graph="on"),
    "stream": dict(fast="on", compile="on", cuda_graph="on", augment_stream="on"),
    "autotune": dict(fast="on", compile="on", cuda_graph="on", max_autotune="on"),
}
# From the H100's figures (11-27: eager 18.5 s, graph 24.9 s per child); autotune's compile: not measured.
TINY_LIMIT_S = 150.0  # a CPU dry run's child: ends on its own in seconds; the limit only bounds a hang
LIMIT_S = {"eager": 35.0, "compile": 70.0, "graph": 65.0, "stream": 70.0, "autotune": 240.0}

# Kernel (or, on CPU, operator) names -> kind; the first matching rule wins.
KINDS = [
    ("optimizer", ("multi_tensor", "foreach", "fused_sgd", "sgd")),
    ("convolution", ("conv", "cudnn", "xmma", "sm90", "sm80", "gemm", "cutlass", "wgrad", "dgrad", "fprop")),
    ("batch_norm", ("batch_norm", "batchnorm", "bn_", "welford")),
    ("inductor_fused", ("triton",)),
    ("reduction", ("reduce", "sum", "mean", "max")),
    ("copy", ("copy", "memcpy", "memset", "cat", "fill")),
    ("elementwise", ("elementwise", "vectorized", "leaky", "relu", "mul", "add", "where", "index", "gather")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def traced(prof, cuda: bool):
    """(name, ms) of what the profiler saw: the kernels on CUDA, the top-level operators on CPU."""
    for e in prof.events():
        kernel = str(e.device_type).endswith("CUDA")
        if cuda and kernel:
            yield e.name, e.time_range.elapsed_us() / 1e3
        elif not cuda and not kernel and e.cpu_parent is None:
            yield e.name, e.cpu_time_total / 1e3


def child(name: str, opts) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from fixmatch.training.bench import build_trainer, measure, sync
    from fixmatch.training.bench_options import bench_args

    tiny = dict(model="cnn_small", batch_size=8, mu=2, warmup=2, steps=3) if opts.tiny else {}
    args = bench_args(device=opts.device, **{**dict(warmup=15, steps=30), **tiny}, **CONFIGS[name])
    if opts.tiny:
        args.compile = args.cuda_graph = args.max_autotune = "off"  # no CPU compile in a dry run
    t = time.perf_counter()
    trainer, _, device = build_trainer(args)
    timing = measure(args, trainer)  # warm-up (compilation, capture) + timed steps + augmentation alone
    start_s = time.perf_counter() - t
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    n = opts.profile_steps
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(n):
            trainer.step()
        sync(device)
    kinds: dict[str, float] = {}
    kernels: dict[str, float] = {}
    for name_, ms in traced(prof, cuda):
        kinds[kind_of(name_)] = kinds.get(kind_of(name_), 0.0) + ms / n
        kernels[name_] = kernels.get(name_, 0.0) + ms / n
    busy = sum(kinds.values())
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:12]
    return {
        "config": name,
        "switches": timing["speedups"],
        "device": timing["device"],
        "torch": timing["torch"],
        "start_s": round(start_s, 1),
        "ms_per_step": timing["ms_per_step"],
        "augment_ms": timing.get("augment_ms"),
        "device_ms_per_step_by_kind": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "device_busy_ms_per_step": round(busy, 3),
        "idle_ms_per_step": round(timing["ms_per_step"]["median"] - busy, 3),
        "kernels_per_step": round(sum(1 for _ in traced(prof, cuda)) / n) if cuda else None,
        "top_kernels_ms_per_step": [[k[:90], round(v, 3)] for k, v in top],
        "profiled_steps": n,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="CPU dry run: a small network, a few steps")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--child", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    out = Path(opts.out).resolve()  # the children run in the repository's root
    if opts.child:
        (out / f"profile_{opts.child}.json").write_text(json.dumps(child(opts.child, opts), indent=1))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    report = {"configs": {}}
    for name in opts.configs.split(","):
        limit = TINY_LIMIT_S if opts.tiny else LIMIT_S[name]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--out", str(out)]
        cmd += ["--device", opts.device, "--profile-steps", str(opts.profile_steps)] + (["--tiny"] if opts.tiny else [])
        with tempfile.TemporaryDirectory() as logs:  # not in --out: the device tool returns at most 8 files
            log = Path(logs) / "child.log"
            ended = run_child(cmd, limit, log)  # its own process group: compile workers die with it
            tail = log.read_text(errors="replace")[-2000:]
        status = "ok" if ended["status"] == "finished" else ended["status"]
        part = out / f"profile_{name}.json"
        entry = json.loads(part.read_text()) if part.is_file() else {}
        part.unlink(missing_ok=True)  # one file back: the device tool returns at most 8
        report["configs"][name] = {"status": status, "wall_s": ended["wall_s"], **entry}
        if status != "ok":
            report["configs"][name]["log_tail"] = tail
        print(name, json.dumps(report["configs"][name]), flush=True)
        (out / "step_profile.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
