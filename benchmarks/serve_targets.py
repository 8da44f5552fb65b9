"""The serving targets, before and after, in one run: `fixmatch serve` with 2 workers on this
machine (loopback only), the released model, and for each configuration:

- server CPU ms per request: the workers' CPU clocks (user + system, from /proc) over N requests
  at c=4, the median of its windows of WINDOW requests: what a request costs the server, which
  holds under load where latency does not;
- the same for a photo with no face and for a 1280 px upload;
- req/s at c=4 and p50 latency at c=1 (new connection per request; both depend on the load).

"before" is the float model with the Haar cascade (`--precision fp32 --face-detector haar`),
"after" the defaults (int8, YuNet where installed). The decoding changes are in both. Photos:
scikit-image's astronaut (a 512x512 portrait, JPEG quality 90), coffee (512 px, no face), and the
astronaut at 1280x1280 (JPEG quality 90).

    python benchmarks/serve_targets.py            # prints the table; -n for more requests
    python benchmarks/serve_targets.py --in-process   # the same photos through predict(), no HTTP
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
from load_test import multipart, run, start_server
from PIL import Image

CONFIGS = {"before": ["--precision", "fp32", "--face-detector", "haar"], "after": []}
TICKS = os.sysconf("SC_CLK_TCK")
WINDOW = 100  # requests per CPU figure (the clock ticks 100 times a second: +-0.2 ms a request)


def photos() -> dict[str, bytes]:
    from skimage import data

    def jpeg(pixels: np.ndarray, side: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).resize((side, side), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
        return buf.getvalue()

    coffee = data.coffee()[:, 50:450]  # 400x400 of a 400x600 photo: a cup, no face
    return {
        "portrait 512": jpeg(data.astronaut(), 512),
        "no face": jpeg(coffee, 512),
        "upload 1280": jpeg(data.astronaut(), 1280),
    }


def workers_cpu(server_pid: int) -> float:
    """CPU seconds (user + system) of the server's worker processes (the children of its pid)."""
    total = 0
    for task in os.listdir(f"/proc/{server_pid}/task"):
        for child in open(f"/proc/{server_pid}/task/{task}/children").read().split():
            fields = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def cpu_per_request(proc, base: str, body: bytes, n: int) -> float:
    """The median over windows of WINDOW requests: a shared VM's cores slow down by half for
    seconds at a time (one in-process call measured 13.4 to 22.1 ms between windows: --in-process), which a
    single mean over the run would take in wherever it fell."""
    run(base, body, 8, 4, 60, False)  # warm: lazy state in each worker
    figures = []
    for _ in range(max(1, n // WINDOW)):
        before = workers_cpu(proc.pid)
        result = run(base, body, WINDOW, 4, 300, False)
        assert result["errors"] == 0, result
        figures.append(1000 * (workers_cpu(proc.pid) - before) / result["requests"])
    return float(np.median(figures))


def measure(flags: list[str], images: dict[str, bytes], n: int) -> dict:
    proc, base = start_server("fer2013", "--rate-limit", "off", *flags, workers=2)
    try:
        row = {f"cpu {name}": cpu_per_request(proc, base, multipart(body), n) for name, body in images.items()}
        portrait = multipart(images["portrait 512"])
        row["req/s c=4"] = run(base, portrait, n, 4, 300, False)["req_per_s"]
        row["p50 c=1"] = run(base, portrait, n, 1, 300, False)["p50_ms"]
        return row
    finally:
        proc.terminate()
        proc.wait()


def in_process(images: dict[str, bytes], windows: int = 15, calls: int = 40) -> None:
    """The API's predict() in this process, one thread, the defaults: this thread's CPU ms per call,
    min / median / max over `windows` windows of `calls` calls (the photos in turn): what a request
    costs without HTTP, and how much the machine's speed moves between windows."""
    import cv2

    from fixmatch.serve.app import create_app, predict

    cv2.setNumThreads(1)  # as each of 2 workers on 2 cores has
    predictor = create_app("fer2013", rate_limit="off").extensions["fixmatch"]["predictor"]
    figures: dict[str, list[float]] = {name: [] for name in images}
    for _ in range(windows):
        for name, data in images.items():
            predict(predictor, data)
            start = time.thread_time()
            for _ in range(calls):
                predict(predictor, data)
            figures[name].append(1000 * (time.thread_time() - start) / calls)
    for name, ms in figures.items():
        spread = f"{min(ms):.2f} / {np.median(ms):.2f} / {max(ms):.2f}"
        print(f"in-process predict(), {name}: {spread} ms (min / median / max)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=600, help="requests per measurement (default 600)")
    p.add_argument("--in-process", action="store_true", help="instead: predict() in this process, no server")
    args = p.parse_args()
    images = photos()
    if args.in_process:
        in_process(images)
        return
    print(f"load average at the start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")
    rows = {name: measure(flags, images, args.n) for name, flags in CONFIGS.items()}
    print(f"load average at the end:   {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    keys = list(rows["after"])
    print(f"{'':<8}" + "".join(f"{k:>18}" for k in keys))
    for name, row in rows.items():
        print(f"{name:<8}" + "".join(f"{row[k]:>18.1f}" for k in keys))
    print("(cpu: server CPU ms per request, 2 workers; p50 in ms; time.strftime:", time.strftime("%Y-%m-%d %H:%M"), ")")


if __name__ == "__main__":
    main()
