"""The training engine: loss, schedule, optimizer groups, EMA, sampler, resume, CLI, fast path."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import kill_then_resume, tiny_config

from fixmatch.cli import main
from fixmatch.config import TrainConfig
from fixmatch.data.splits import official_labeled_indices
from fixmatch.errors import UserError
from fixmatch.models import build_model, count_parameters
from fixmatch.training.bench import build_trainer, flat_params
from fixmatch.training.bench_options import bench_args
from fixmatch.training.ema import EMA
from fixmatch.training.engine import EpochSampler
from fixmatch.training.optim import cosine_lr, param_groups
from fixmatch.training.train import resume, train


def compare_paths(plain_args, fast_args, steps: int = 3) -> dict:
    """Run `steps` training steps from the same initial weights and batches on two configurations
    and report how far their losses and parameters drift apart (the fast path must compute the same
    function up to the rounding of its number formats)."""
    runs = []
    for args in (plain_args, fast_args):
        torch.manual_seed(0)
        trainer, _, _ = build_trainer(args)
        start = flat_params(trainer.model)
        losses: list[float] = []
        for _ in range(steps):
            trainer.step()
            losses.append(float(trainer.sums["loss"]) - sum(losses))
        runs.append((trainer, losses, flat_params(trainer.model) - start))
    (a, la, da), (b, lb, db) = runs
    return {
        "max_loss_rel_diff": max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb)),
        # how far the fast path's total parameter update strays from the plain one's
        "update_rel_diff": float((da - db).norm() / da.norm().clamp_min(1e-12)),
        "update_cosine": float(torch.nn.functional.cosine_similarity(da, db, dim=0)),
        "fast": b.speedups.describe(),
    }


def test_official_cosine_schedule():
    assert cosine_lr(0.03, 0, 1000) == pytest.approx(0.03)
    assert cosine_lr(0.03, 1000, 1000) == pytest.approx(0.03 * math.cos(7 * math.pi / 16))


def test_cosine_is_clipped_at_k_as_official():
    """google-research/fixmatch fixmatch.py:92-93 (commit d4985a1), restated:
        lrate = tf.clip_by_value(tf.to_float(self.step) / (FLAGS.train_kimg << 10), 0, 1)
        lr *= tf.cos(lrate * (7 * np.pi) / (2 * 8))
    (self.step counts images, train_kimg << 10 the run's images: the ratio is k / K)."""

    def official(lr, k, total):
        lrate = min(max(k / total, 0.0), 1.0)
        return lr * math.cos(lrate * (7 * math.pi) / (2 * 8))

    for k in (0, 1, 500, 999, 1000, 1001, 1500, 4000):
        assert cosine_lr(0.03, k, 1000) == pytest.approx(official(0.03, k, 1000), rel=1e-12), k


def test_weight_decay_only_on_conv_and_linear_weights():
    model = build_model("wrn10_1", 10, 3)
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    bn_and_bias = {
        id(p)
        for m in model.modules()
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Linear))
        for n, p in m.named_parameters()
        if n == "bias" or isinstance(m, torch.nn.BatchNorm2d)
    }
    assert bn_and_bias == {id(p) for p in no_decay["params"]}


def test_wrn37_2_takes_grey_48px():
    model = build_model("wrn37_2", 7, 1).eval()
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    assert 5.5e6 < count_parameters(model) < 6.5e6
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.momentum == 0.001 for m in bn)  # official TF decay 0.999


def test_ema_follows_decay_and_warmup():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(step=0)  # warm-up decay (1+0)/(10+0) = 0.1 -> moves 90% of the way
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.9))
    assert EMA(model, 0.999, warmup=False).decay_at(0) == 0.999


def test_sampler_covers_every_index_each_pass_and_repeats_small_pools():
    g = torch.Generator().manual_seed(0)
    s = EpochSampler(10, 5, g)
    seen = torch.cat([s.next(), s.next()])
    assert sorted(seen.tolist()) == list(range(10))
    big = EpochSampler(3, 8, torch.Generator().manual_seed(0)).next()
    assert len(big) == 8 and set(big.tolist()) == {0, 1, 2}


def test_split_errors_are_clear():
    labels = np.concatenate([np.zeros(3, int), np.ones(40, int)])
    assert np.bincount(labels[official_labeled_indices(labels, 43, seed=1)]).tolist() == [3, 40]
    with pytest.raises(UserError, match="exceeds"):
        official_labeled_indices(labels, 44, seed=1)


tiny = tiny_config


def test_train_writes_the_run_directory(tmp_path):
    summary = train(tiny(tmp_path), log=lambda *_: None)
    run = tmp_path / "run"
    for name in ("config.yaml", "split.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir()), "tensorboard events"
    saved = json.loads((run / "summary.json").read_text())
    for key in ("dataset", "algorithm", "num_labels", "steps", "accuracy", "median_last20", "raw_accuracy", "seconds"):
        assert key in saved
    assert saved == summary
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [8, 16, 24]
    assert 0 <= saved["accuracy"] <= 1 and len(json.loads((run / "split.json").read_text())["labeled"]) == 20


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    a, b = kill_then_resume(tiny, tmp_path, monkeypatch, kill_at=16)  # killed right after the step-16 checkpoint
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    assert [r["step"] for r in b["history"]] == [8, 16, 24]


def test_evaluate_and_predict_cli(tmp_path, capsys):
    train(tiny(tmp_path), log=lambda *_: None)
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


def small_bench(**switches):
    return bench_args(model="wrn10_1", image_size=8, channels=1, batch_size=8, mu=2, device="cpu", **switches)


def test_bf16_channels_last_path_computes_the_same_function_on_cpu():
    """bf16 autocast keeps ~3 significant digits: the losses agree within 3%. Gradients of the layers
    near the input lose more (measured on CPU: ~30% relative error at the stem of a freshly initialised
    WRN-28-2 vs 0.3% for fp32 against fp64), so the update is checked by direction: cosine > 0.9."""
    r = compare_paths(
        small_bench(fast="off"),
        small_bench(fast="on", compile="off", amp="on", channels_last="on", fused_optimizer="on"),
    )
    assert r["fast"] == "amp+channels_last+fused_optimizer"
    assert r["max_loss_rel_diff"] < 3e-2 and r["update_cosine"] > 0.9


def test_compiled_path_computes_the_same_function_on_cpu():
    """torch.compile in fp32 only reorders arithmetic: losses and parameter updates agree to 1e-3."""
    r = compare_paths(
        small_bench(fast="off"),
        small_bench(fast="on", compile="on", amp="off", channels_last="off", fused_optimizer="off"),
    )
    assert r["fast"] == "compile"
    assert r["max_loss_rel_diff"] < 1e-4 and r["update_rel_diff"] < 1e-3


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


def test_a_run_folder_is_named_after_its_runs():
    import re

    from fixmatch.training.resolve import resolve
    from fixmatch.training.train import default_out

    demo = default_out(resolve(TrainConfig(dataset="digits")))  # the demo: a supervised baseline, then FixMatch
    single = default_out(resolve(TrainConfig(dataset="digits", algorithm="fixmatch")))
    assert demo.parent == single.parent == Path("runs")
    assert re.fullmatch(r"digits-20-supervised-vs-fixmatch-\d{8}-\d{6}", demo.name), demo.name
    assert re.fullmatch(r"digits-20-fixmatch-\d{8}-\d{6}", single.name), single.name


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


def test_resume_with_more_steps_says_what_the_cosine_does(tmp_path):
    train(tiny(tmp_path), log=lambda *_: None)
    said = []
    longer = resume(tmp_path / "run", {"steps": 32}, log=said.append)
    assert longer["steps"] == 32 and "the cosine's K follows (24 -> 32)" in said[0]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["meta"]["config"]["lr_schedule_steps"] == 32


def test_out_that_cannot_be_a_run_directory_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    args = ["train", "--algorithm", "fixmatch", "--steps", "2", "--out"]
    assert main([*args, str(tmp_path / "a_file")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "a_file" / "run")]) == 2  # cannot be created (even by root)
    assert "cannot write the run directory" in capsys.readouterr().err


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary_file(tmp_path):
    """A real write failure from the kernel (a file size limit: the file system refuses the write the
    way a full disk does) while a resumed run saves: exit 2 naming the file, last.pt unchanged, no
    temporary file left to keep the disk full, and the run resumes once there is room."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    train(tiny_config(tmp_path, steps=8), log=lambda *_: None)
    run = tmp_path / "run"
    before = (run / "last.pt").read_bytes()
    assert len(before) > 100_000  # the limit below stops the checkpoint, not the small files

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, no signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run(
        [sys.executable, "-m", "fixmatch", "train", "--resume", str(run), "--steps", "16", "--threads", "1"],
        capture_output=True,
        text=True,
        preexec_fn=small_files_only,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write {run / 'last.pt'} (File too large)" in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "last.pt").read_bytes() == before
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    assert resume(run, {"steps": 16}, log=lambda *_: None)["steps"] == 16


def test_no_space_left_is_said_plainly(tmp_path, capsys):
    """ENOSPC itself (/dev/full refuses every write with it): "disk full at PATH", exit 2."""
    from fixmatch.outputs import write_text_atomic

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(UserError, match="^disk full at /dev/full"):
        write_text_atomic("/dev/full", "x" * 100_000)


def test_sigterm_during_training_says_where_the_checkpoint_is(tmp_path):
    """A scheduler's SIGTERM: exit 143 with the signal named and the run's last.pt and --resume
    command given (it used to end silently)."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--algorithm", "fixmatch", "--steps", "100000", "--eval-every", "4",
            "--batch-size", "8", "--mu", "2", "--no-progress", "--threads", "1", "--out", str(run)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "fixmatch", *argv], stderr=subprocess.PIPE, text=True)
    try:
        while not (run / "last.pt").exists():  # ready: the first checkpoint is written
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and str(run / "last.pt") in err and f"--resume {run}" in err, err
    assert "Traceback" not in err
