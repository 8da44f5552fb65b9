#!/usr/bin/env python
"""The speed switches on a CPU, one at a time against the plain step, interleaved in one run: where a
CPU training step's time goes (augmentation vs the network and loss) and what channels-last, bf16
autocast and torch.compile each change.

    python benchmarks/cpu_switches.py [--rounds 1] [--threads 1] [--switches channels_last amp compile]

Each measurement is `fixmatch bench --device cpu --json` in a child process. Workloads: the digits
demo's step (cnn_small, 8x8x1, B=8, mu=2), the own-images default (cnn_small, 32x32x3, B=16, mu=7 on
synthetic pixels) and WRN-28-2 (32x32x3, B=16, mu=2: a smaller batch than the paper's, for a CPU).
Prints one JSON line per measurement, then a table of ms/step and the ratio to plain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKLOADS = {
    "digits demo": ["--dataset", "digits", "--model", "cnn_small", "--batch-size", "8", "--mu", "2"],
    "own images default": ["--model", "cnn_small", "--image-size", "32", "--channels", "3", "--batch-size", "16"],
    "wrn28_2": ["--model", "wrn28_2", "--batch-size", "16", "--mu", "2"],
}


def bench(workload: list[str], switch: str | None, args) -> dict:
    flags = ["--fast", "off"] if switch is None else ["--" + switch.replace("_", "-"), "on"]
    cmd = [sys.executable, "-m", "fixmatch", "bench", "--device", "cpu", "--threads", args.threads,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--json", *workload, *flags]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(args) -> list[dict]:
    rows = []
    for rnd in range(args.rounds):
        for name, workload in WORKLOADS.items():
            for switch in [None, *args.switches]:
                load = os.getloadavg()[0]
                r = bench(workload, switch, args)
                row = dict(round=rnd, workload=name, switch=switch or "plain", load_1min=round(load, 2))
                if "error" in r:
                    row["error"] = r["error"]
                else:
                    ms, aug, net = r["ms_per_step"]["median"], r.get("augment_ms"), r.get("model_ms")
                    row.update(ms=ms, augment_ms=aug, model_ms=net)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| workload | switch | ms/step | augmentation ms | network + loss ms | vs plain | load |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    plain = {(r["round"], r["workload"]): r.get("ms") for r in rows if r["switch"] == "plain"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['switch']} | failed: {r['error'][:60]} | | | | {r['load_1min']} |")
            continue
        base = plain.get((r["round"], r["workload"]))
        ratio = f"{base / r['ms']:.2f}x" if base else ""
        lines.append(
            f"| {r['workload']} | {r['switch']} | {r['ms']:.1f} | {r['augment_ms']:.1f} | {r['model_ms']:.1f} | "
            f"{ratio} | {r['load_1min']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", default="1")
    p.add_argument("--switches", nargs="+", default=["channels_last", "amp", "compile"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    print(table(measure(args)))


if __name__ == "__main__":
    main()
