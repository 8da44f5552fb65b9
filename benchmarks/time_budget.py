#!/usr/bin/env python
"""How close real `--time-budget` runs end to their budget, on the machine as it is and with CPU
burners started part-way through the run (the machine getting busy after the first plan).

    python benchmarks/time_budget.py [--minutes 0.5] [--burners 2] [--burn-from 0.6] [--repeat 2]

Each run is the digits demo's FixMatch (B=8, mu=2, evaluation every 200 steps), in a child process.
Prints one JSON line per run: the budget, the wall seconds train() took, their ratio, steps and re-plans.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

RUN = """
import json, sys
from fixmatch.config import TrainConfig
from fixmatch.training.train import train
s = train(TrainConfig(dataset="digits", algorithm="fixmatch", time_budget=float(sys.argv[1]), eval_every=200,
                      batch_size=8, mu=2, progress=False, out=sys.argv[2]), log=lambda *_: None)
print(json.dumps(s))
"""


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def one_run(minutes: float, burners: int, burn_from: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", RUN, str(minutes), out + "/run"], stdout=subprocess.PIPE)
        procs = []
        if burners:
            time.sleep(burn_from * 60 * minutes)
            procs = [mp.Process(target=burn, args=(60 * minutes,)) for _ in range(burners)]
            for p in procs:
                p.start()
        stdout, _ = child.communicate()
        wall = time.perf_counter() - t0
        for p in procs:
            p.terminate()
            p.join()
    s = json.loads(stdout.decode().strip().splitlines()[-1])
    budget = 60 * minutes
    return {
        "budget_s": budget,
        "burners": burners,
        "burn_from": burn_from if burners else None,
        "train_wall_s": s["wall_seconds_this_session"],
        "ratio": round(s["wall_seconds_this_session"] / budget, 4),
        "process_wall_s": round(wall, 2),  # interpreter start and imports are outside the budget
        "steps": s["steps"],
        "planned_steps": s["planned_steps"],
        "replans": s["replans"],
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=0.5)
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--burn-from", type=float, default=0.6, help="fraction of the budget after which burners start")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    for burners in (0, args.burners):
        for _ in range(args.repeat):
            print(json.dumps(one_run(args.minutes, burners, args.burn_from)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
