"""The command line on the API: train prints its report and commands that work as printed; evaluate and predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import tiny_config

from fixmatch.cli import main
from fixmatch.training.train import train


def test_evaluate_and_predict_cli(tmp_path, capsys):
    train(tiny_config(tmp_path), log=lambda *_: None)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["confusion_matrix"]) == 10 and sum(map(sum, report["confusion_matrix"])) == 500
    from PIL import Image

    img = tmp_path / "seven.png"
    Image.fromarray((np.eye(8)[::-1] * 255).astype(np.uint8)).save(img)
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), str(img)]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["label"] in [str(i) for i in range(10)]
    assert sum(pred["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "missing.png")]) == 2


def test_demo_compares_supervised_and_fixmatch_on_the_same_labels(tmp_path):
    """fixmatch.train with a baseline (the digits demo's default) runs both and returns both summaries;
    the CLI prints its table from them."""
    import fixmatch
    from fixmatch.cli import final_report

    summary = fixmatch.train(steps=16, eval_every=8, mu=2, progress=False, out=str(tmp_path), log=lambda *_: None)
    sup, fix = summary["baseline"], summary
    assert (sup["algorithm"], fix["algorithm"]) == ("supervised", "fixmatch")
    split = lambda a: json.loads((tmp_path / a / "split.json").read_text())["labeled"]  # noqa: E731
    assert split("supervised") == split("fixmatch") and len(split("fixmatch")) == 20
    report = final_report(summary).splitlines()
    assert report[0].split() == ["algorithm", "labels", "steps", "accuracy", "median", "seconds"]
    assert [row.split()[0] for row in report[1:3]] == ["supervised", "fixmatch"]
    assert any(f"evaluate --checkpoint {tmp_path / 'fixmatch'}" in line for line in report)  # what next


def test_a_single_run_prints_the_same_report_and_its_commands_work_in_a_fresh_shell(tmp_path, capsys):
    """The "next:" lines run as printed in a shell that never activated the virtual environment."""
    run = tmp_path / "run"
    assert main(["train", "--algorithm", "fixmatch", "--steps", "4", "--eval-every", "2", "--mu", "1",
                 "--no-progress", "--out", str(run)]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    table = out.index(next(line for line in out if line.split()[:2] == ["algorithm", "labels"]))
    assert out[table + 1].split()[:3] == ["fixmatch", "20", "4"] and out[table + 2].startswith("runs: ")
    commands = [line.split("  #")[0].strip() for line in out[table + 4 :]]
    evaluate = next(c for c in commands if " evaluate --checkpoint " in c)
    fresh = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    fresh["PATH"] = os.pathsep.join(
        p for p in fresh["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
    )
    p = subprocess.run(evaluate + " --json", shell=True, capture_output=True, text=True, env=fresh, timeout=600)
    assert p.returncode == 0, p.stderr
    assert 0 <= json.loads(p.stdout)["accuracy"] <= 1


def test_a_config_file_sets_what_the_flags_leave_unset(tmp_path, capsys):
    """`train --config FILE` (fixmatch.train(config_file=...)): the file's options apply, a flag wins
    over the file, and a recipe in the file fills only what neither sets."""
    import yaml

    exp = tmp_path / "exp.yaml"
    exp.write_text("recipe: fast\nsteps: 2\neval_every: 2\nbatch_size: 4\nmu: 1\nthreads: 1\nprogress: false\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(exp), "--mu", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["steps"], saved["batch_size"], saved["mu"], saved["algorithm"]) == (2, 4, 2, "flexmatch")
