#!/usr/bin/env python
"""Start-up cost of the light entry points: `fixmatch --help` and one ONNX serving worker (the
released model), each in a fresh interpreter: wall seconds, peak RSS, and whether torch was imported.

    python benchmarks/startup.py [--repeat 5] [--src DIR]   # --src: another checkout's src/ to compare
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROBES = {
    "fixmatch --help": (
        "import sys\nfrom fixmatch.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    ),
    "ONNX serve worker": "from fixmatch.serve.app import create_app\ncreate_app('fer2013', None)\n",
}
REPORT = (
    "import sys, resource\nprint(__import__('json').dumps({'torch': 'torch' in sys.modules, "
    "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)


def probe(code: str, src: str | None) -> dict:
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + REPORT], capture_output=True, text=True, env=env, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--src", help="import fixmatch from this src/ folder instead (e.g. an older checkout)")
    args = p.parse_args()
    for name, code in PROBES.items():
        runs = [probe(code, args.src) for _ in range(args.repeat)]
        print(
            f"{name:<20} {statistics.median(r['seconds'] for r in runs):6.2f} s (median of {args.repeat})  "
            f"peak RSS {statistics.median(r['rss_mb'] for r in runs):6.0f} MB  torch imported: {runs[0]['torch']}"
        )


if __name__ == "__main__":
    main()
