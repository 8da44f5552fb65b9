#!/usr/bin/env python
"""Accuracy versus training time, one PNG per run, from the evaluation records a run writes.

A source is any of: a run directory (metrics.jsonl, + summary.json for the title), a metrics.jsonl,
a log whose lines carry the JSON evaluation records (`fixmatch train` without a progress bar, e.g.
benchmarks/results/gpu_h100_2026-11-26.log), or a stage archive from benchmarks/gpu_results.py
(`<stage>.tar`: one curve per run inside it).

    python benchmarks/plot_curves.py $OUT/cifar10_250.tar --out-dir benchmarks/results/curves
    python benchmarks/plot_curves.py benchmarks/results/gpu_h100_2026-11-26.log --name fer2013_release_h100 \\
        --title "FER2013 release, H100 (first call: to step 15,657)"

x: the record's `seconds` (training time since the loop started: steps, evaluations and checkpoints;
start-up before the first step is not in it); y: PrivateTest/test accuracy of the EMA model (the
reported figure) and of the raw model (thin line).
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
from pathlib import Path

JSON_IN_LINE = re.compile(r"(\{.*\})\s*$")


def records(text: str) -> list[dict]:
    """The evaluation records in a text: JSON objects with a step and an accuracy, one per line
    (anything before the object on its line, such as a timestamp, is ignored)."""
    out = []
    for line in text.splitlines():
        match = JSON_IN_LINE.search(line)
        if not match:
            continue
        try:
            rec = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec and "accuracy" in rec and "seconds" in rec:
            out.append(rec)
    return out


def curves(source: Path) -> list[tuple[str, list[dict], dict]]:
    """(name, records, summary) for each run in the source."""
    if source.suffix == ".tar":
        with tarfile.open(source) as tar:
            files = {
                m.name: tar.extractfile(m).read().decode()
                for m in tar
                if m.isfile() and m.name.endswith(("metrics.jsonl", "summary.json"))
            }
        runs = sorted({n.rsplit("/", 1)[0] for n in files if n.endswith("metrics.jsonl")})
        return [
            (
                run.replace("/", "-"),
                records(files[f"{run}/metrics.jsonl"]),
                json.loads(files.get(f"{run}/summary.json", "{}")),
            )
            for run in runs
        ]
    if source.is_dir():
        summary = source / "summary.json"
        return [
            (
                source.name,
                records((source / "metrics.jsonl").read_text()),
                json.loads(summary.read_text()) if summary.is_file() else {},
            )
        ]
    return [(source.stem, records(source.read_text()), {})]


def title_of(name: str, summary: dict) -> str:
    if not summary:
        return name
    budget = f", --time-budget {summary['time_budget_minutes']:g} min" if summary.get("time_budget_minutes") else ""
    return (
        f"{summary.get('dataset')} @ {summary.get('num_labels')} labels, {summary.get('algorithm')}, "
        f"{summary.get('model')}, {summary.get('steps'):,} steps{budget}"
    )


def plot(name: str, recs: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r["seconds"] for r in recs]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    ax.plot(seconds, [100 * r["accuracy"] for r in recs], marker="o", ms=3, label="EMA model (reported)")
    if all("raw_accuracy" in r for r in recs):
        ax.plot(seconds, [100 * r["raw_accuracy"] for r in recs], lw=0.8, alpha=0.7, label="raw model")
    last = recs[-1]
    ax.annotate(
        f"{100 * last['accuracy']:.2f}% at step {last['step']:,}",
        (seconds[-1], 100 * last["accuracy"]),
        textcoords="offset points",
        xytext=(-10, -14),
        ha="right",
        fontsize=8,
    )
    ax.set_xlabel("training seconds (steps, evaluations, checkpoints)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", type=Path)
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/curves"))
    p.add_argument("--name", help="file name (without .png) when a source holds one run")
    p.add_argument("--title", help="title when a source holds one run")
    a = p.parse_args(argv)
    for source in a.sources:
        found = curves(source)
        for name, recs, summary in found:
            if not recs:
                print(f"{source}: {name}: no evaluation records, no curve")
                continue
            single = len(found) == 1
            path = a.out_dir / f"{(a.name if single and a.name else name)}.png"
            plot(name, recs, a.title if single and a.title else title_of(name, summary), path)
            print(f"{path}: {len(recs)} evaluations, last {100 * recs[-1]['accuracy']:.2f}% at step {recs[-1]['step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
