"""dev/step_profile.py on CPU with --tiny: each configuration in its own child, one JSON back
with the step time, the augmentation's share and the profiled time by kind of work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from repo import REPO

sys.path.insert(0, str(REPO / "dev"))

import step_profile  # noqa: E402  (from dev/, put on the path above)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32", "convolution"),
        ("void at::native::batch_norm_collect_statistics_channels_last_kernel<at::native::Var>", "batch_norm"),
        ("triton_red_fused__native_batch_norm_legit_functional_leaky_relu_backward", "batch_norm"),
        ("triton_poi_fused_add_13", "inductor_fused"),
        ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedSgdMathFunctor>", "optimizer"),
        ("void at::native::vectorized_elementwise_kernel<8, leaky_relu_kernel>", "elementwise"),
        ("Memcpy DtoD (Device -> Device)", "copy"),
        ("ncclKernel_something", "other"),
    ],
)
def test_kernels_are_sorted_into_kinds_of_work(name, kind):
    assert step_profile.kind_of(name) == kind


def test_the_trace_counts_kernels_on_cuda_and_only_top_level_operators_on_cpu():
    from types import SimpleNamespace

    def event(name, device, parent=None, us=1000.0):
        span = SimpleNamespace(elapsed_us=lambda: us)
        return SimpleNamespace(name=name, device_type=device, cpu_parent=parent, time_range=span, cpu_time_total=us)

    top = event("aten::conv2d", "DeviceType.CPU")
    prof = SimpleNamespace(
        events=lambda: [
            top,
            event("aten::convolution", "DeviceType.CPU", parent=top),  # inside conv2d: counted once, above
            event("sm90_xmma_fprop", "DeviceType.CUDA", us=250.0),
        ]
    )
    assert list(step_profile.traced(prof, cuda=False)) == [("aten::conv2d", 1.0)]
    assert list(step_profile.traced(prof, cuda=True)) == [("sm90_xmma_fprop", 0.25)]


@pytest.mark.slow
def test_cpu_dry_run_profiles_each_configuration_in_a_child(tmp_path):
    cmd = [sys.executable, str(REPO / "dev/step_profile.py"), "--device", "cpu", "--tiny"]
    cmd += ["--out", str(tmp_path), "--configs", "eager,stream,autotune", "--profile-steps", "3"]
    subprocess.run(cmd, check=True, timeout=600, capture_output=True)  # a hang guard (3 children)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_profile.json"]  # one file back
    configs = json.loads((tmp_path / "step_profile.json").read_text())["configs"]
    assert list(configs) == ["eager", "stream", "autotune"]
    for c in configs.values():
        assert c["status"] == "ok" and c["profiled_steps"] == 3
        # both timed, apart: on a busy machine the augmentation's own window can be the slower one,
        # so their order says nothing (it failed under load: 78.7 ms a step, 152.2 ms augmenting)
        assert c["ms_per_step"]["median"] > 0 and c["augment_ms"] > 0
        kinds = c["device_ms_per_step_by_kind"]
        assert kinds["convolution"] > 0 and kinds["optimizer"] > 0  # the step's work was traced
        assert c["device_busy_ms_per_step"] == pytest.approx(sum(kinds.values()), abs=0.01)


@pytest.mark.slow
def test_a_failing_configuration_reports_its_log(tmp_path):
    cmd = [sys.executable, str(REPO / "dev/step_profile.py"), "--device", "cuda:99", "--tiny"]
    subprocess.run(cmd + ["--out", str(tmp_path), "--configs", "eager"], check=True, timeout=300, capture_output=True)
    (entry,) = json.loads((tmp_path / "step_profile.json").read_text())["configs"].values()
    assert entry["status"].startswith("failed (exit") and "ms_per_step" not in entry
    assert "Error: " in entry["log_tail"]  # the child's own error, kept
