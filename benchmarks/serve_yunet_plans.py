"""The serving targets' server CPU figures (serve_targets.py, the defaults' row) for other YuNet
search plans: each plan is served from a copy of the package whose yunet.SIDES is that plan, one
server after the other, with the same photos and requests. The proxy set's side of the same plans:
`face_detectors.py --yunet-sides`.

    python benchmarks/serve_yunet_plans.py 160,240 160,256 192 160,192   # one row per plan; -n requests
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path

from face_detectors import plan_sides
from serve_targets import measure, photos

SRC = Path(__file__).resolve().parents[1] / "src"
SIDES_LINE = re.compile(r"^SIDES = \([0-9, ]+\)", re.M)


def package_with(plan: tuple[int, ...], folder: Path) -> Path:
    """A copy of src/ whose yunet.SIDES is `plan` -> the folder to put on PYTHONPATH."""
    shutil.copytree(SRC, folder / "src")
    path = folder / "src" / "fixmatch" / "inference" / "yunet.py"
    text, found = SIDES_LINE.subn(f"SIDES = ({', '.join(map(str, plan))},)", path.read_text())
    if found != 1:
        raise SystemExit(f"{path}: no single 'SIDES = (...)' line to replace")
    path.write_text(text)
    return folder / "src"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "plans", nargs="+", type=plan_sides, metavar="PLAN", help="longest sides searched in turn, e.g. 160,240"
    )
    p.add_argument("-n", type=int, default=400, help="requests per measurement (default 400)")
    args = p.parse_args()
    images = photos()
    print(f"load average at the start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")
    for sides in args.plans:
        with tempfile.TemporaryDirectory() as folder:
            os.environ["PYTHONPATH"] = str(package_with(sides, Path(folder)))  # the server's imports
            row = measure([], images, args.n)
        print(
            f"{','.join(map(str, sides)):<10}"
            + "".join(f"  {k} {v:.1f}" for k, v in row.items())
            + f"  | load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
