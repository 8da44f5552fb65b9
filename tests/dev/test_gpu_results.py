"""dev/gpu_results.py end to end on CPU with --tiny settings: stages in child processes with
time limits, a stage killed at its limit while later stages still run, a stage skipped for lack of
data, and what lands in $OUT. Plus the plan's arithmetic and the FER2013 extract for the carry."""

from __future__ import annotations

import io
import json
import lzma
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from repo import REPO

sys.path.insert(0, str(REPO / "dev"))

import gpu_results  # noqa: E402  (from dev/, put on the path above)
import gpu_results_data  # noqa: E402

pytestmark = pytest.mark.slow  # the results script end to end, in child processes


def write_npz_xz(path: Path, **arrays) -> None:
    raw = io.BytesIO()
    np.savez(raw, **arrays)
    path.write_bytes(lzma.compress(raw.getvalue(), preset=0))


def tiny_cifar(folder: Path) -> None:
    """A stand-in for cifar10_device.npz.xz: 10 classes, 20 train and 5 test images each, whose
    brightness depends on the class (something to learn), in the shared copy's layout."""
    rng = np.random.default_rng(0)

    def part(per_class):
        y = np.repeat(np.arange(10), per_class)
        x = (rng.integers(0, 128, (len(y), 32, 32, 3)) + 12 * y[:, None, None, None]).astype(np.uint8)
        return x, y

    (x, y), (xt, yt) = part(20), part(5)
    write_npz_xz(folder / "cifar10_device.npz.xz", x_train=x, y_train=y, x_test=xt, y_test=yt)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One tiny results call: compare, a CIFAR stage that overruns (no budget) and is killed, a CIFAR
    stage under --time-budget, and a FER stage without its data."""
    root = tmp_path_factory.mktemp("gpu_results")
    data, out = root / "data", root / "out"
    data.mkdir()
    tiny_cifar(data)
    cmd = [
        sys.executable,
        str(REPO / "dev" / "gpu_results.py"),
        "--tiny",
        "--device",
        "cpu",
        "--data",
        str(data),
        "--out",
        str(out),
        "--minutes",
        "5",
        "--stages",
        "compare,cifar10_4000,cifar10_250,fer_70",
        "--stage-seconds",
        "compare=120",  # limits are safety nets, generous for a loaded machine: each stage ends on its own
        "cifar10_4000=8",
        "cifar10_250=52",  # a 30 s --time-budget (from the child's start): 52 s less the tiny margin of 22 s
        "--ignore-budget",
        "cifar10_4000",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=290, cwd=root, env={**os.environ, "PYTHONPATH": str(REPO / "src")}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_results.json").read_text())
    return proc, out, {s["stage"]: s for s in results["stages"]}, results


def run_of(stage: dict) -> dict:
    (run,) = stage["runs"]
    return run


def members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_stages_run_in_child_processes(session):
    _, _, stages, results = session
    pids = [run_of(stages[name])["pid"] for name in ("compare", "cifar10_4000", "cifar10_250")]
    assert len(set(pids)) == 3 and results["pid"] not in pids


def test_a_stage_past_its_limit_is_killed_and_the_next_still_runs(session):
    _, out, stages, _ = session
    killed = run_of(stages["cifar10_4000"])
    assert killed["status"] == "killed at its 8 s limit" and killed["returncode"] is None
    assert killed["wall_s"] >= 8  # killed by its limit, not before (had it run on, it would say "finished")
    assert "killed at its 8 s limit" in (out / "gpu_results.md").read_text()
    later = run_of(stages["cifar10_250"])
    assert later["status"] == "finished" and later["summary"]  # its --time-budget ended it in time


def test_a_stage_without_its_data_is_skipped_with_a_line(session):
    proc, _, stages, _ = session
    assert stages["fer_70"]["skipped"].startswith("skipped: fer2013.npz.xz not in")
    assert "fer_70: skipped: fer2013.npz.xz not in" in proc.stdout


def test_out_holds_a_tar_per_stage_and_the_result_files(session):
    _, out, _, _ = session
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cifar10_250.tar",
        "cifar10_4000.tar",
        "compare.tar",
        "gpu_results.json",
        "gpu_results.log",
        "gpu_results.md",
    ]  # no run directories left, <= 8 files
    files = members(out / "cifar10_250.tar")
    for name in (
        "summary.json",
        "metrics.jsonl",
        "config.yaml",
        "requested.yaml",
        "split.json",
        "train.log",
        "model.safetensors",
        "curve.png",
    ):
        assert f"cifar10_250/fixmatch/{name}" in files
    assert not any(n.endswith(".pt") for n in files)
    summary = json.loads(files["cifar10_250/fixmatch/summary.json"])
    assert summary["time_budget_minutes"] == pytest.approx((52 - gpu_results.TINY_MARGIN_S) / 60, abs=1e-3)
    assert summary["planned_steps"] and summary["steps"] >= 1
    log = (out / "gpu_results.log").read_text()
    assert "== compare" in log and "== cifar10_250" in log


def test_the_exported_model_loads_and_matches_its_metrics(session, tmp_path):
    from fixmatch.inference.loading import load_model

    _, out, stages, _ = session
    files = members(out / "cifar10_250.tar")
    (tmp_path / "m.safetensors").write_bytes(files["cifar10_250/fixmatch/model.safetensors"])
    loaded = load_model(str(tmp_path / "m.safetensors"))
    assert loaded.meta["num_classes"] == 10 and loaded.meta["image_shape"] == [3, 32, 32]
    history = [json.loads(line) for line in files["cifar10_250/fixmatch/metrics.jsonl"].decode().splitlines()]
    row = run_of(stages["cifar10_250"])
    assert row["accuracy"] == history[-1]["accuracy"] and row["steps"] == history[-1]["step"]
    assert row["command"].startswith("fixmatch train ") and "--time-budget" in row["command"]


def test_the_killed_run_still_returns_its_last_evaluation(session):
    _, out, stages, _ = session
    files = members(out / "cifar10_4000.tar")
    assert "cifar10_4000/fixmatch/train.log" in files
    row = run_of(stages["cifar10_4000"])
    if row["evaluations"]:  # a loaded machine may not reach step 10 in 8 s
        assert "cifar10_4000/fixmatch/model.safetensors" in files and row["accuracy"] is not None


def test_compare_reports_each_path_from_the_same_start(session):
    _, out, stages, _ = session
    report = run_of(stages["compare"])
    assert report["status"] == "finished"
    paths = report["paths"]
    assert set(paths) == {"exact_fp32", "exact_fp32_nudged", "fast"} and paths["exact_fp32"]["speedups"] == "plain"
    for p in paths.values():
        assert len(p["loss"]) == gpu_results.TINY_COMPARE_STEPS and p["ms_per_step"]["median"] > 0
    # same weights, labels and batches: the first step's loss differs only by bf16 rounding
    first = [paths[k]["loss"][0] for k in ("exact_fp32", "fast")]
    assert abs(first[0] - first[1]) / first[0] < 0.05
    assert -1 <= report["difference"]["update_cosine"] <= 1
    # the yardstick: the exact path from weights nudged by 1e-6 ends off it (how far is what it measures:
    # the drift grows chaotically over the steps and differs between CPUs, so no bound is asserted)
    reference = report["reference"]
    assert reference["update_rel_diff"] > 0 and math.isfinite(reference["update_rel_diff"])
    assert -1 <= reference["update_cosine"] <= 1
    assert "reference (exact_fp32_nudged)" in (out / "gpu_results.md").read_text()
    assert "compare/compare/compare.json" in members(out / "compare.tar")


def test_difference_measures_the_total_update_exactly():
    import torch

    paths = {k: {"loss_last50": 2.0, "accuracy": {"raw": 0.5, "ema": 0.25}} for k in ("exact_fp32", "other")}
    paths["other"] = {"loss_last50": 2.5, "accuracy": {"raw": 0.75, "ema": 0.5}}
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0]) + torch.tensor([0.0, 0.5])
    d = gpu_results.difference(paths, {"exact_fp32": a, "other": b}, "other")
    assert d["loss_last50_rel"] == 0.25 and d["raw_accuracy_points"] == 25 and d["ema_accuracy_points"] == 25
    assert d["update_rel_diff"] == pytest.approx(0.1, rel=1e-6)  # |(0, 0.5)| / |(3, 4)|
    assert d["update_cosine"] == pytest.approx((9 + 18) / (5 * (9 + 4.5**2) ** 0.5), rel=1e-6)


def test_bench_times_each_switch_in_its_own_child(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    tiny_cifar(data)
    cmd = [sys.executable, str(REPO / "dev" / "gpu_results.py"), "--tiny", "--device", "cpu"]
    cmd += ["--data", str(data), "--stages", "bench", "--out", str(out), "--minutes", "10"]
    cmd += ["--stage-seconds", "bench=450"]  # safety nets: each row ends on its own in seconds
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (stage,) = json.loads((out / "gpu_results.json").read_text())["stages"]
    rows = {r["run"]: r for r in stage["runs"]}
    assert list(rows) == gpu_results.TINY_BENCH_ROWS and len({r["pid"] for r in rows.values()}) == len(rows)
    for name, r in rows.items():
        assert r["status"] == "finished" and r["ms_per_step"]["median"] > 0, (name, r)
        assert r["augment_only"] == name.endswith(" augment")
    assert rows["plain"]["speedups"] == "plain" and rows["bf16+cl+fused"]["speedups"] != "plain"
    assert "| plain augment |" in (out / "gpu_results.md").read_text()


def test_time_to_accuracy_trains_each_algorithm_on_both_cifar_files(tmp_path):
    """The full-CIFAR-10 stage: skipped without cifar10_rest; with both files, one run per algorithm
    (equal budgets) on the images of both (the labeled ones come from both parts)."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    tiny_cifar(data)
    cmd = [sys.executable, str(REPO / "dev" / "gpu_results.py"), "--tiny", "--device", "cpu"]
    cmd += ["--data", str(data), "--stages", "tta_250"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([*cmd, "--out", str(out / "a")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (skipped,) = json.loads((out / "a" / "gpu_results.json").read_text())["stages"]
    assert skipped["skipped"] == f"skipped: cifar10_rest.npz.xz not in {data}"
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 20)
    write_npz_xz(data / "cifar10_rest.npz.xz", x_train=rng.integers(0, 256, (200, 32, 32, 3), np.uint8), y_train=y)
    seconds = 50 * len(gpu_results.STAGES["tta_250"].runs)  # a 10 s budget each, a safety net of 50 s
    cmd += ["--out", str(out / "b"), "--minutes", "20", "--stage-seconds", f"tta_250={seconds}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (stage,) = json.loads((out / "b" / "gpu_results.json").read_text())["stages"]
    runs = {r["run"]: r for r in stage["runs"]}
    assert set(runs) == set(gpu_results.STAGES["tta_250"].runs)
    for name, r in runs.items():
        assert r["status"] == "finished" and r["summary"] and r["evaluations"] >= 1, (name, r)
        assert r["time_budget_minutes"] == pytest.approx((50 - gpu_results.TINY_MARGIN_S) / 60, abs=1e-3)
    assert {runs[a]["algorithm"] for a in gpu_results.TTA_ALGORITHMS} == set(gpu_results.TTA_ALGORITHMS)
    split = json.loads(members(out / "b" / "tta_250.tar")["tta_250/fixmatch/split.json"])
    assert max(split["labeled"]) >= 200  # 200 train images in cifar10_device: labels come from the rest too
    assert "not found; training on" not in members(out / "b" / "tta_250.tar")["tta_250/fixmatch/train.log"].decode()


def test_plot_curves_reads_a_stage_archive_and_a_log(session, tmp_path):
    import plot_curves

    _, out, _, _ = session
    assert plot_curves.main([str(out / "cifar10_250.tar"), "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "cifar10_250-fixmatch.png").read_bytes()[:4] == b"\x89PNG"
    log = '[ 200.5s] {"step": 921, "accuracy": 0.16, "raw_accuracy": 0.18, "seconds": 42.3}\nnoise {"a": 1}\n'
    (tmp_path / "run.log").write_text(log)
    ((name, recs, _),) = plot_curves.curves(tmp_path / "run.log")
    assert [r["step"] for r in recs] == [921] and name == "run"


# ---- the plan, without running anything --------------------------------------------------------------
def opts_for(data: Path, stages: str, minutes=9.0, seconds=()):
    return gpu_results.parse_args(
        ["--data", str(data), "--stages", stages, "--minutes", str(minutes), "--stage-seconds", *seconds]
    )


def test_the_plan_skips_absent_data_and_shares_the_rest(tmp_path):
    tiny_cifar(tmp_path)
    stages = gpu_results.plan(opts_for(tmp_path, "compare,cifar10_4000,cifar10_250,cifar10_250_cta,fer_70"))
    limits = {s.name: limit for s, limit, _ in stages}
    assert limits["fer_70"] is None and limits["cifar10_250_cta"] == 0.0  # share stage
    assert limits["cifar10_4000"] == 210 and limits["cifar10_250"] == 150
    left = 9 * 60 - gpu_results.RESERVE_S
    assert gpu_results.share(stages, left) == pytest.approx(left - gpu_results.compare_seconds() - 360)
    # with the FER data instead, its two stages split the whole call
    fer = tmp_path / "fer"
    fer.mkdir()
    (fer / "fer2013.npz.xz").write_bytes(b"")
    stages = gpu_results.plan(opts_for(fer, "compare,fer_70,fer_700", minutes=4))
    assert [limit for _, limit, _ in stages] == [None, 0.0, 0.0]
    assert gpu_results.share(stages[1:], 225.0) == pytest.approx(112.5)


def test_limits_come_from_the_measured_figures():
    m = gpu_results.MEASURED
    assert gpu_results.compare_seconds() == round(
        m["compare_child_s"] + m["exact_300_s"] + 40 * m["ms_32_plain"] / 1000 + gpu_results.MARGIN_S
    )
    # CUDA graphs pay ~37 s of compilation: worth it for a long run, not for a minute at 48x48
    assert gpu_results.speed_switches(gpu_results.FER_FILE, 300) == gpu_results.FAST
    assert gpu_results.speed_switches(gpu_results.FER_FILE, 60) == gpu_results.EAGER
    assert gpu_results.speed_switches(gpu_results.CIFAR_FILE, 195) == gpu_results.FAST
    # a minute-long share trains eagerly; CTAugment's eager step was measured apart from RandAugment's
    assert "29.06 ms/step" in gpu_results.expected(gpu_results.STAGES["cifar10_250"], 60, False)
    assert "39.85 ms/step" in gpu_results.expected(gpu_results.STAGES["cifar10_250_cta"], 60, False)


def test_fer_extract_keeps_training_and_private_test(tmp_path):
    from fixmatch.data import load_dataset

    rng = np.random.default_rng(1)
    usage = np.array([0, 1, 1, 0, 1], dtype=np.uint8)
    write_npz_xz(
        tmp_path / "fer2013.npz.xz",
        x_train=rng.integers(0, 256, (12, 48, 48, 1), dtype=np.uint8),
        y_train=np.arange(12) % 7,
        x_test=rng.integers(0, 256, (5, 48, 48, 1), dtype=np.uint8),
        y_test=np.arange(5),
        test_usage=usage,
        class_names=np.array(["a"] * 7),
    )
    dest = tmp_path / "extract" / "fer2013.npz.xz"
    info = gpu_results_data.fer_private_extract(tmp_path / "fer2013.npz.xz", dest)
    assert info["train"] == 12 and info["private_test"] == 3
    full = load_dataset("fer2013", str(tmp_path))
    part = load_dataset("fer2013", str(dest.parent))
    assert np.array_equal(full.x_train.numpy(), part.x_train.numpy())
    assert np.array_equal(full.x_test.numpy(), part.x_test.numpy())  # PrivateTest, the same images
    assert part.y_test.tolist() == [1, 2, 4]


def test_every_training_stage_is_the_official_recipe_under_a_budget(tmp_path):
    from fixmatch.config import TrainConfig
    from fixmatch.training.resolve import resolve

    opts = opts_for(tmp_path, "compare")
    for stage in gpu_results.STAGES.values():
        for name, fields in stage.runs.items():
            assert "steps" not in fields  # the time budget sets them; no stage fixes its length
            switches = gpu_results.speed_switches(stage.needs, 200)
            cfg = resolve(
                TrainConfig(**gpu_results.train_fields(stage, {**fields, **switches}, tmp_path / name, 215.0, opts))
            )
            assert cfg.model == "wrn28_2" and cfg.fold == 1 and cfg.seed == 0 and cfg.num_labels == fields["num_labels"]
            assert cfg.time_budget == pytest.approx(200 / 60, abs=1e-4)
            assert (cfg.batch_size, cfg.mu, cfg.lr, cfg.threshold, cfg.lambda_u, cfg.ema_decay) == (
                64,
                7,
                0.03,
                0.95,
                1.0,
                0.999,
            )
            assert cfg.weight_decay == 5e-4 and cfg.bn_momentum == 0.001 and not cfg.ema_warmup and cfg.flip
            assert cfg.input_scaling == "official" and cfg.randaugment == "official"
            assert cfg.strong_augment == ("cta" if stage.name.endswith("cta") else "ra")
            assert (cfg.fast, cfg.cuda_graph) == ("on", "on") and not cfg.progress


def test_the_nudged_reference_starts_its_ema_from_its_own_moved_weights():
    import copy
    from types import SimpleNamespace

    import torch

    model = torch.nn.Linear(50, 20)
    trainer = SimpleNamespace(model=model, ema=SimpleNamespace(model=copy.deepcopy(model)))
    before = model.weight.detach().clone()
    gpu_results.nudge(trainer)
    moved = (model.weight - before).abs() / before.abs()
    assert 0 < moved.max() < 10 * gpu_results.NUDGE  # moved, by about NUDGE of itself
    assert torch.equal(trainer.ema.model.weight, model.weight) and torch.equal(trainer.ema.model.bias, model.bias)


def test_the_carry_report_counts_what_a_call_copies(tmp_path, monkeypatch):
    """Tracked files and untracked ones git does not ignore count; ignored ones (the data itself, in
    .gpu/) do not; past the limit it says to move the zoo aside, or that even that is not enough."""
    repo, mib = tmp_path / "repo", 2**20
    (repo / "src" / "fixmatch" / "zoo").mkdir(parents=True)
    (repo / ".gpu").mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.gpu/\n")
    (repo / "tracked.bin").write_bytes(b"t" * mib)
    (repo / "src" / "fixmatch" / "zoo" / "fer2013.onnx").write_bytes(b"z" * 2 * mib)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    (repo / "untracked.bin").write_bytes(b"u" * mib)
    data = repo / ".gpu" / "data.npz.xz"
    data.write_bytes(b"d" * 3 * mib)
    assert gpu_results_data.working_tree_bytes(repo) == 4 * mib + len("/.gpu/\n")
    assert gpu_results_data.working_tree_bytes(repo, gpu_results_data.ZOO) == 2 * mib
    for limit, says in ((8, ": fits"), (6, "DOES NOT FIT. Move the zoo (2.0 MiB) aside"), (4, "even without the zoo")):
        monkeypatch.setattr(gpu_results_data, "CARRY_MIB", limit)
        assert says in gpu_results_data.carry_report(data, repo), limit


def test_a_dry_run_takes_the_budget_it_is_given():
    """--tiny caps each run's --time-budget at TINY_BUDGET_S, or at --tiny-budget (the full CIFAR-10's
    test set cannot be evaluated on a CPU beside the start-up within the default)."""
    stage = gpu_results.STAGES["tta_250"]
    fields = next(iter(stage.runs.values()))
    for extra, seconds in (([], gpu_results.TINY_BUDGET_S), (["--tiny-budget", "90"], 90.0)):
        opts = gpu_results.parse_args(["--data", "unused", "--tiny", *extra])
        cfg = gpu_results.train_fields(stage, fields, Path("unused"), 200.0, opts)
        assert cfg["time_budget"] == pytest.approx(seconds / 60, abs=1e-4)
