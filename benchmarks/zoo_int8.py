"""The released FER2013 model's int8 twin (src/fixmatch/zoo/fer2013.int8.onnx), made from the shipped
fer2013.onnx exactly as `fixmatch export --int8` makes any model's: calibrated on 1,000 FER2013
Training images, measured beside the float model on all 3,589 PrivateTest images (the table
MODEL_CARD.md quotes).

    python benchmarks/zoo_int8.py --data-dir DATA            # prints the table, writes nothing
    python benchmarks/zoo_int8.py --data-dir DATA --write    # (re)writes the zoo's int8 file
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fixmatch.data import load_dataset
from fixmatch.inference.model_files import ZOO_DIR, int8_path
from fixmatch.inference.quantize import export_int8, int8_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the folder holding FER2013 (fer2013.csv or fer2013.npz.xz)")
    p.add_argument("--write", action="store_true", help="write the twin into the zoo")
    args = p.parse_args()
    fp32 = ZOO_DIR / "fer2013.onnx"
    data = load_dataset("fer2013", args.data_dir, fer_test="private")
    with tempfile.TemporaryDirectory() as scratch:
        out = int8_path(fp32) if args.write else Path(scratch) / int8_path(fp32).name
        print(int8_table(export_int8(fp32, out, data, "private"), out))


if __name__ == "__main__":
    main()
