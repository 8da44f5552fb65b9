"""A serving change measured against a git revision: the serving targets' figures (serve_targets.py,
the defaults' row) for the package as a revision had it and as the working tree has it, served in
alternation (A, B, A, B, ...) so that a machine whose speed drifts over minutes (a shared cloud
VM: the same work measured 25% apart between runs) weighs on both alike; the medians and the
range of each figure over the rounds.

    python benchmarks/serve_ab.py HEAD~1              # 3 rounds; --rounds, -n requests per figure
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from serve_targets import measure, photos

REPO = Path(__file__).resolve().parents[1]


def package_at(revision: str, folder: Path) -> Path:
    """src/ as `revision` has it, written under `folder` -> the folder to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "src"], capture_output=True, check=False
    )
    if archive.returncode:
        raise SystemExit(f"git archive {revision}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("revision", help="the git revision to compare the working tree with, e.g. HEAD or main~2")
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs (default 3)")
    p.add_argument("-n", type=int, default=300, help="requests per figure (default 300)")
    args = p.parse_args()
    images = photos()
    print(f"load average at the start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")
    rows: dict[str, list[dict]] = {args.revision: [], "working tree": []}
    with tempfile.TemporaryDirectory() as folder:
        sources = {args.revision: package_at(args.revision, Path(folder)), "working tree": REPO / "src"}
        for round_ in range(args.rounds):
            for name, src in sources.items():
                os.environ["PYTHONPATH"] = str(src)  # the server's imports
                rows[name].append(measure([], images, args.n))
                print(f"round {round_ + 1} {name:<14}" + "".join(f"  {k} {v:.1f}" for k, v in rows[name][-1].items()))
    print(f"load average at the end:   {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    keys = list(rows["working tree"][0])
    print(f"{'median (min-max)':<16}" + "".join(f"{k:>22}" for k in keys))
    for name, measured in rows.items():
        cells = [[row[k] for row in measured] for k in keys]
        print(f"{name:<16}" + "".join(f"{np.median(c):>10.1f} ({min(c):.1f}-{max(c):.1f})" for c in cells))


if __name__ == "__main__":
    main()
