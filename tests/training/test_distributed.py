"""Multi-process training with torchrun on CPU (gloo): the launch, 2 ranks x B/2 == 1 rank x B,
resuming a 2-rank run from a 1-rank checkpoint, rank-0-only files, identical ranks, a dying rank.

This file is also the torchrun entry point of those runs (`python tests/training/test_distributed.py train ...`):
run as a script it registers the test-only BN-free model and optional hooks, then calls the CLI."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from repo import TESTS
from tiny_runs import tiny_config

from fixmatch.augment.ctaugment import CTAugment
from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.models import MODELS, register
from fixmatch.training import distributed
from fixmatch.training.train import train


class NoBN(nn.Module):
    """Without BatchNorm the loss of a batch is the mean of per-image losses, so a split batch must
    give the same gradient: the equivalence test needs no SyncBatchNorm (which has no CPU kernel)."""

    def __init__(self, num_classes: int, in_channels: int = 3, **_):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def nobn_test(num_classes: int, in_channels: int = 3, **_) -> nn.Module:
    return NoBN(num_classes, in_channels)


if "nobn_test" not in MODELS:
    register(nobn_test)

QUIET = dict(log=lambda *_: None)
TINY = [
    "--dataset",
    "digits",
    "--algorithm",
    "fixmatch",
    "--batch-size",
    "8",
    "--mu",
    "2",
    "--seed",
    "3",
    "--no-progress",
    "--threads",
    "1",
    "--device",
    "cpu",
]


def torchrun(tmp_path, *args, env=None, nproc=2):
    """Launch this file under torchrun with 2 CPU ranks; returns the completed process."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--log-dir",
        str(tmp_path / "torchrun-logs"),
        "--tee",
        "3",  # each rank's output, prefixed
        __file__,
        "train",
        *TINY,
        *map(str, args),
    ]
    # the script imports the tests' helpers (tiny_runs) from tests/
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env or {})}
    return subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=180)


def cfg(out, **kw):
    # threshold 0.1 < max softmax of 10 classes: every pseudo-label counts, so the unlabeled loss is active
    base = dict(model="nobn_test", steps=8, eval_every=4, device="cpu", out=str(out), threshold=0.1)
    return tiny_config(**{**base, **kw})


def load(path):
    return torch.load(path, weights_only=False, map_location="cpu")


def assert_close_states(a: dict, b: dict):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


# ---- in-process units ---------------------------------------------------------------------------------
def test_shard_batch_takes_the_same_images_in_both_unlabeled_views():
    x = torch.arange(8 + 2 * 16).view(-1, 1, 1, 1)  # [8 labeled | 16 weak | 16 strong]
    y_l, y_u = torch.arange(8), torch.arange(16)
    xs, yl, yu = distributed.shard_batch(x, y_l, y_u, distributed.Dist(rank=1, world=2))
    assert xs.flatten().tolist() == [4, 5, 6, 7, *range(16, 24), *range(32, 40)]
    assert yl.tolist() == [4, 5, 6, 7] and yu.tolist() == list(range(8, 16))
    assert distributed.shard_batch(x, y_l, y_u, distributed.SINGLE)[0] is x


def test_batch_must_divide_by_world_size_and_sync_bn_needs_cuda(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match="divisible by the world size 3"):
        distributed.setup(TrainConfig(batch_size=8, device="cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="sync-bn needs CUDA"):
        distributed.setup(TrainConfig(batch_size=8, device="cpu", sync_bn=True))


# ---- torchrun, 2 CPU ranks ----------------------------------------------------------------------------
@pytest.mark.slow  # torchrun launches
def test_two_ranks_train_with_bn_write_once_and_stay_identical(tmp_path):
    """cnn_small (BatchNorm, per-rank statistics): completes, one summary from rank 0, and both ranks
    end with the same weights, EMA (BN statistics averaged at evaluation) and optimizer state."""
    out = tmp_path / "run"
    p = torchrun(
        tmp_path,
        "--model",
        "cnn_small",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--out",
        out,
        env={"FIXMATCH_TEST_DUMP": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(list(tmp_path.rglob("summary.json"))) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [3, 6]
    assert p.stdout.count("algorithm    labels") == 1, "only rank 0 prints the report"
    r0, r1 = load(out / "rank0.pt"), load(out / "rank1.pt")
    # each rank forwards its half of the global batch: B/2 labeled + both views of mu*B/2 unlabeled (B=8, mu=2)
    assert r0["forwarded"] == r1["forwarded"] == [4 + 2 * 8] * 6
    for part in ("model", "ema"):
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
    for a, b in zip(r0["optimizer"]["state"].values(), r1["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in r0["history"] + r1["history"]]
    assert drop_time[:2] == drop_time[2:], "every rank holds the same evaluation records"


@pytest.mark.slow  # torchrun launches
def test_two_ranks_half_batch_equal_one_rank_full_batch_and_resume_across_world_sizes(tmp_path):
    """Without BN, 2 ranks x B/2 must follow 1 rank x B: same images and augmentations (the global
    batch is augmented identically on every rank), DDP's averaged gradient = the global mean's."""
    ref = train(cfg(tmp_path / "ref"), **QUIET)  # 1 rank, 8 steps
    train(cfg(tmp_path / "one", steps=4, lr_schedule_steps=8), **QUIET)  # 1 rank, stopped at step 4
    common = ["--model", "nobn_test", "--eval-every", "4", "--lr-schedule-steps", "8", "--threshold", "0.1"]
    fresh = torchrun(tmp_path, *common, "--steps", "8", "--out", tmp_path / "two")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    resumed = torchrun(tmp_path, "--resume", tmp_path / "one", "--steps", "8", "--lr-schedule-steps", "8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load(tmp_path / "ref" / "last.pt")
    for run in ("two", "one"):  # 2 ranks from scratch; 2 ranks resuming the 1-rank checkpoint at step 4
        b = load(tmp_path / run / "last.pt")
        assert b["step"] == 8
        assert_close_states(a["model"], b["model"])
        assert_close_states(a["ema"], b["ema"])
        assert torch.equal(a["generator"], b["generator"]), "the sampling stream is rank-independent"
        got = json.loads((tmp_path / run / "summary.json").read_text())
        assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=0.01)
        assert got["mask_rate"] == ref["mask_rate"] == 1.0
        for key in ("loss", "loss_x", "loss_u"):  # the global training statistics, averaged over ranks
            assert b["history"][-1][key] == pytest.approx(a["history"][-1][key], rel=1e-5), key
        assert got["world_size"] == 2
    assert [r["step"] for r in load(tmp_path / "one" / "last.pt")["history"]] == [4, 8]


@pytest.mark.slow  # torchrun launches
@pytest.mark.parametrize("how", ["crash", "hang"])
def test_a_failing_rank_fails_the_job_quickly_with_the_rank_named(tmp_path, how):
    """crash: torchrun tears the other rank down; hang: the survivor's collective times out
    (--dist-timeout 0.1 minutes) instead of waiting forever (torchrun()'s 180 s guard is far below the
    default 30-minute timeout, so a timeout left at its default fails the test)."""
    p = torchrun(
        tmp_path,
        "--model",
        "nobn_test",
        "--steps",
        "50",
        "--eval-every",
        "2",
        "--dist-timeout",
        "0.1",
        "--out",
        tmp_path / "run",
        env={"FIXMATCH_TEST_FAIL": f"{how}:3"},
    )
    assert p.returncode != 0 and "ChildFailedError" in p.stderr
    expected = "simulated failure of rank 1" if how == "crash" else "timed out waiting"  # gloo's words
    assert expected in p.stderr.lower(), p.stderr[-3000:]
    assert load(tmp_path / "run" / "last.pt")["step"] == 2 and not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow  # torchrun launches
@pytest.mark.parametrize(
    "algorithm,extra",
    [
        ("flexmatch", {"threshold": 0.3}),
        ("freematch", {"lambda_e": 0.0}),
        ("softmatch", {}),
        ("softmatch", {"softmatch_dist_uniform": False}),
        ("dash", {"dash_warmup_steps": 2, "dash_decay_every": 2}),
        ("adamatch", {}),
    ],
)
def test_two_ranks_keep_a_stateful_algorithm_as_one_rank_with_the_global_batch(tmp_path, algorithm, extra):
    """Each rank gathers what its algorithm learns from (predictions, pool indices) from every rank:
    the state is that of one process with the global batch, identical on both ranks, and (BN-free
    model, losses that are means over images) so is the training. FreeMatch's fairness loss is a
    per-rank loss in the reference too (its weight is 0 here, so the runs must agree), and so is
    AdaMatch's relative threshold (at tau 0.1 it lets every image in, so the runs must agree)."""
    ref = train(cfg(tmp_path / "ref", algorithm=algorithm, **extra), **QUIET)
    options = {**extra, "threshold": extra.get("threshold", 0.1)}
    flags = [
        f"--{'' if v else 'no-'}{k.replace('_', '-')}" if isinstance(v, bool) else f"--{k.replace('_', '-')}={v}"
        for k, v in options.items()
    ]
    p = torchrun(
        tmp_path,
        "--algorithm",
        algorithm,
        "--model",
        "nobn_test",
        "--steps",
        "8",
        "--eval-every",
        "4",
        *flags,
        "--out",
        tmp_path / "two",
        env={"FIXMATCH_TEST_DUMP": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    a, r0, r1 = (
        load(tmp_path / "ref" / "last.pt"),
        load(tmp_path / "two" / "rank0.pt"),
        load(tmp_path / "two" / "rank1.pt"),
    )
    assert a["algorithm"] and a["algorithm"].keys() == r0["algorithm"].keys()
    for k in a["algorithm"]:
        assert torch.equal(r0["algorithm"][k], r1["algorithm"][k]), k  # the ranks never drift apart
        if a["algorithm"][k].is_floating_point():
            torch.testing.assert_close(r0["algorithm"][k], a["algorithm"][k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(r0["algorithm"][k], a["algorithm"][k]), k
    assert_close_states(a["model"], r0["model"])
    got = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert got["mask_rate"] == pytest.approx(ref["mask_rate"], abs=1e-6)


# ---- torchrun entry point --------------------------------------------------------------------------------
@pytest.mark.slow  # a torchrun launch
def test_two_ranks_apply_ctaugments_single_process_update(tmp_path):
    """torchrun, 2 CPU ranks x B/2 (gloo): each rank classifies its half of the global probe batch and
    the probabilities are all-gathered, so the rates equal a 1-process run's (BN-free model: the
    2-rank and 1-rank runs compute the same function up to float rounding)."""
    r = torchrun(
        tmp_path,
        "--model",
        "nobn_test",
        "--strong-augment",
        "cta",
        "--steps",
        "8",
        "--eval-every",
        "4",
        "--threshold",
        "0.1",
        "--out",
        str(tmp_path / "two"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    train(cfg(tmp_path / "one", strong_augment="cta"), log=lambda *_: None)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=False)["cta"]["rates"]
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=False)["cta"]["rates"]
    assert (one[CTAugment().valid] != 1).sum() > 20
    assert torch.allclose(two, one, rtol=0, atol=1e-6)


def _script_main() -> int:
    import faulthandler

    from fixmatch.training import engine

    faulthandler.enable()  # a rank that aborts prints where every thread of it was
    from fixmatch.cli import main

    rank = int(os.environ.get("RANK", 0))
    how, _, at = os.environ.get("FIXMATCH_TEST_FAIL", "").partition(":")
    if how and rank == 1:  # rank 1 crashes or hangs when it reaches step `at`
        step = engine.Trainer.step

        def failing_step(self):
            if self.step_num == int(at):
                if how == "hang":
                    time.sleep(600)
                raise RuntimeError("simulated failure of rank 1")
            step(self)

        engine.Trainer.step = failing_step
    if os.environ.get("FIXMATCH_TEST_DUMP"):  # every rank saves its final state to compare them
        from fixmatch.training import loop

        run_loop = loop.run_loop

        def dumping_loop(trainer, out_dir, meta, **kw):
            forwarded: list[int] = []  # images per training forward: this rank's slice of the batch
            trainer.model.register_forward_pre_hook(
                lambda module, args: forwarded.append(args[0].shape[0]) if module.training else None
            )
            run_loop(trainer, out_dir, meta, **kw)
            torch.save({**trainer.state_dict({}), "forwarded": forwarded}, Path(out_dir) / f"rank{rank}.pt")

        import fixmatch.training.train as train_module

        train_module.run_loop = dumping_loop
    return main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(_script_main())
