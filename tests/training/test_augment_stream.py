"""--augment-stream and --max-autotune: speed switches that must not change what is computed.

The augment stream draws the next batch during the current step: the batches, the trained weights
and a resumed run must be exactly those of the plain order. On CPU the same code runs without a
second stream; the CUDA test checks the batches with a real second stream."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import kill_then_resume, tiny_config

from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training import fast
from fixmatch.training.resolve import resolve
from fixmatch.training.train import train


def weights(folder) -> dict:
    return torch.load(folder / "run" / "last.pt", weights_only=False)["model"]


def test_the_stream_trains_exactly_the_plain_run(tmp_path):
    plain = train(tiny_config(tmp_path / "plain"), log=lambda *_: None)
    streamed = train(tiny_config(tmp_path / "stream", augment_stream="on"), log=lambda *_: None)
    for key in ("accuracy", "raw_accuracy", "mask_rate", "pseudo_label_accuracy", "steps"):
        assert streamed[key] == plain[key], key
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "stream")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_step_leaves_the_next_batch_in_flight_with_the_state_from_before_it(tmp_path):
    from fixmatch.data import load_data
    from fixmatch.training.devices import pick_device
    from fixmatch.training.train import make_trainer, pick_labels

    cfg = resolve(tiny_config(tmp_path, augment_stream="on"))
    data = load_data(cfg)
    trainer = make_trainer(cfg, data, pick_labels(cfg, data), pick_device("cpu"))
    stream = trainer.augment_stream
    trainer.step()
    assert stream.pending is not None  # drawn during the step (on CUDA: beside its backward pass)
    queues, generator = stream.state_before()
    assert torch.equal(trainer.state_dict({})["generator"], generator)  # the checkpoint rewinds to it
    assert not torch.equal(trainer.generator.get_state(), generator)  # the draw moved the generator on
    stream.take(trainer.step_num)
    assert stream.state_before() is None  # taken: nothing in flight, nothing to rewind


def test_a_resume_redraws_the_batch_that_was_in_flight(tmp_path, monkeypatch):
    # step 16's checkpoint is written while step 17's batch is already drawn: the checkpoint must
    # hold the sampler and generator from before that batch, or the resumed run skips it
    a, b = kill_then_resume(lambda f: tiny_config(f, augment_stream="on"), tmp_path, monkeypatch, kill_at=16)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_the_stream_with_ctaugment_is_one_clear_error():
    with pytest.raises(UserError, match="RandAugment only"):
        resolve(TrainConfig(dataset="digits", augment_stream="on", strong_augment="cta"))


def test_max_autotune_without_compile_is_one_clear_error():
    cfg = resolve(TrainConfig(dataset="digits", max_autotune="on"))  # compile auto = off on CPU
    with pytest.raises(UserError, match="--max-autotune tunes torch.compile"):
        fast.resolve_speedups(cfg, torch.device("cpu"))
    on = fast.resolve_speedups(
        resolve(TrainConfig(dataset="digits", max_autotune="on", compile="on")), torch.device("cpu")
    )
    assert on.max_autotune and on.compile and "max_autotune" in on.describe()


@pytest.mark.parametrize(
    "cuda_graph, max_autotune, mode",
    [
        (False, False, None),
        (True, False, "reduce-overhead"),
        (False, True, "max-autotune-no-cudagraphs"),
        (True, True, "max-autotune"),
    ],
)
def test_compile_mode_follows_the_switches(monkeypatch, cuda_graph, max_autotune, mode):
    seen = {}
    monkeypatch.setattr(fast.torch, "compile", lambda fn, mode, dynamic: seen.update(mode=mode, dynamic=dynamic))
    fast.compile_fn(lambda: None, fast.Speedups(compile=True, cuda_graph=cuda_graph, max_autotune=max_autotune))
    assert seen == {"mode": mode, "dynamic": False}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_second_stream_draws_the_plain_batches():
    from fixmatch.data import load_data
    from fixmatch.training.devices import pick_device
    from fixmatch.training.train import make_trainer, pick_labels

    def batches(**switches):
        cfg = resolve(TrainConfig(dataset="digits", device="cuda", batch_size=8, mu=2, fast="off", **switches))
        data = load_data(cfg)
        torch.manual_seed(cfg.seed)
        trainer = make_trainer(cfg, data, pick_labels(cfg, data), pick_device("cuda"))
        out = []
        for _ in range(4):
            batch = trainer.make_batch(trainer.step_num)
            out.append(tuple(t.clone() for t in batch.tensors()))
            trainer.step()  # launches the next batch on the side stream
        return out

    for plain, streamed in zip(batches(), batches(augment_stream="on")):
        assert all(torch.equal(p, s) for p, s in zip(plain, streamed))
