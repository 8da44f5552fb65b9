#!/usr/bin/env python
"""CPU training step time at one thread and at `--threads auto` (every CPU this process may use),
interleaved in one run, on the machine as it is and with CPU burners beside it.

    python benchmarks/threads.py [--models wrn28_2 cnn_small] [--rounds 2] [--burners 1]

Each measurement is `fixmatch bench --device cpu --json` in a child process (synthetic 32x32x3, B and mu
below); the order is round by round: for each load (quiet, then with burners), for each model, 1 then
auto. Prints one JSON line per measurement and a Markdown table of the medians at the end, with the
1-minute load average read before each measurement (other users' work shows there).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time


def burn() -> None:
    while True:
        pass


def bench(model: str, threads: str, args) -> dict:
    cmd = [sys.executable, "-m", "fixmatch", "bench", "--device", "cpu", "--model", model, "--threads", threads,
           "--batch-size", str(args.batch_size), "--mu", str(args.mu), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args) -> list[dict]:
    rows = []
    for rnd in range(args.rounds):
        for burners in (0, args.burners):
            procs = [mp.Process(target=burn, daemon=True) for _ in range(burners)]
            for p in procs:
                p.start()
            try:
                for model in args.models:
                    for threads in ("1", "auto"):
                        load = os.getloadavg()[0]
                        r = bench(model, threads, args)
                        row = dict(round=rnd, burners=burners, model=model, threads=threads,
                                   torch_threads=r["threads"], ms=r["ms_per_step"]["median"],
                                   images_per_second=r["images_per_second"], load_1min=round(load, 2))  # fmt: skip
                        print(json.dumps(row), flush=True)
                        rows.append(row)
            finally:
                for p in procs:
                    p.terminate()
                    p.join()
            time.sleep(2)  # let the burners' exit show in the load average before the next block
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | burners | threads | ms/step (median of rounds) | images/s | load (1 min) |",
             "|---|---:|---|---:|---:|---|"]  # fmt: skip
    keys = dict.fromkeys((r["model"], r["burners"], r["threads"]) for r in rows)
    for model, burners, threads in keys:
        sel = [r for r in rows if (r["model"], r["burners"], r["threads"]) == (model, burners, threads)]
        ms = statistics.median(r["ms"] for r in sel)
        ips = statistics.median(r["images_per_second"] for r in sel)
        loads = ", ".join(f"{r['load_1min']:.1f}" for r in sel)
        shown = f"auto ({sel[0]['torch_threads']})" if threads == "auto" else threads
        lines.append(f"| {model} | {burners} | {shown} | {ms:.0f} | {ips:.0f} | {loads} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["wrn28_2", "cnn_small"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--burners", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mu", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    print(table(measure(args)))


if __name__ == "__main__":
    main()
