"""What a hostile image costs each reader: the server's answer to an upload, `fixmatch predict`'s
preparation of a file and the training decode of it. Each measurement runs in a fresh Python
process (peak RSS growth over the process before the call, wall seconds), at most --timeout s.

    python benchmarks/decode_cost.py                       # this checkout
    PYTHONPATH=/tmp/old/src python benchmarks/decode_cost.py   # another checkout's code, same files

Files, made here: a 16-bit grey 40 MP PNG (a smooth gradient, ~90 KB) and a ~1 MB progressive
JPEG of 6324x6324 whose last scan repeats ~10,000 times, with one 0x00 byte before its first scan.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

READERS = {
    # what each reader runs on the file at `path`; the released FER2013 model's metadata for the framing
    "server": (
        "from fixmatch.serve.app import predict; from fixmatch.inference.predictor import load_predictor; "
        "p = load_predictor('fer2013'); data = open(path, 'rb').read(); {setup}\n"
        "try:\n    out = predict(p, data)\nexcept Exception as e:\n    out = type(e).__name__ + ': ' + str(e)[:120]"
    ),
    "predict": (
        "from fixmatch.inference.predict import prepare_file; from fixmatch.inference.predictor import load_predictor; "
        "meta = load_predictor('fer2013').meta; {setup}\nout = prepare_file(__import__('pathlib').Path(path), meta)"
    ),
    "training": (
        "from fixmatch.data.image_cache import decode; {setup}\n"
        "try:\n    out = decode(path, 48, 1).shape\n"
        "except Exception as e:\n    out = type(e).__name__ + ': ' + str(e)[:120]"
    ),
}
MEASURE = """
import sys
path = sys.argv[1]
{reader}
"""
TIMED = "import resource as _r, time as _t; _before = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss; _t0 = _t.perf_counter()"


def sixteen_bit_png() -> bytes:
    import numpy as np
    from PIL import Image

    h, w = 5000, 8000
    row = (np.arange(w, dtype=np.uint32) * 65535 // (w - 1)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(np.broadcast_to(row, (h, w)).copy()).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def scan_bomb_with_stray_byte() -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from serve_fixtures import progressive_jpeg_bomb

    bomb = progressive_jpeg_bomb()
    first = bomb.index(b"\xff\xda")
    return bomb[:first] + b"\x00" + bomb[first:]


def measure(reader: str, path: Path, timeout: float) -> dict:
    body = READERS[reader].format(setup=TIMED) + (
        "\nimport json; print(json.dumps({'seconds': round(_t.perf_counter() - _t0, 2), "
        "'peak_rss_growth_mb': round((_r.getrusage(_r.RUSAGE_SELF).ru_maxrss - _before) / 1024), "
        "'answer': str(out.get('error') or out.get('label') or 'prepared' if isinstance(out, dict) else out)[:140], "
        "'ms': out.get('ms') if isinstance(out, dict) else None}))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE.format(reader=body), str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": f">{timeout:g}", "answer": "still decoding at the timeout (killed)"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=120, help="seconds one measurement may take")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"16-bit 40 MP PNG": sixteen_bit_png(), "scan bomb, stray byte": scan_bomb_with_stray_byte()}
        results = {}
        for name, data in files.items():
            path = Path(tmp) / ("f.png" if "PNG" in name else "f.jpg")
            path.write_bytes(data)
            for reader in READERS:
                result = measure(reader, path, args.timeout)
                results[f"{name} ({len(data):,} bytes), {reader}"] = result
                print(f"{name}, {reader}: {result}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
