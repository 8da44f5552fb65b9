"""Tests for fixmatch.augment.ctaugment: every CTAugment op against the official formulas run on PIL, the
sampler, the rate update against a transcription of the official loop, state and determinism.

The PIL references below are written from libml/ctaugment.py's formulas (Pillow 10-13; Image.ANTIALIAS
is LANCZOS). Every comparison is bit-exact, on 32 real CIFAR-10 (32x32x3) and 16 FER2013 (48x48x1)
images, each image with its own argument value, several rounds of values per op (a sweep of [0, 1]
and uniform draws). Grey images: the official cutout writes an RGB tuple and fails on mode "L"; the
reference writes grey 127 there.
"""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from shared_data import SHARED, read_head
from tiny_runs import kill_then_resume, tiny_config, tiny_trainer
from torch import Tensor

from fixmatch.augment.ctaugment import BINS, CTA_OP_NAMES, CTAugment, apply_ops, apply_slot, proximity, stats_text


def _one_op(name: str, x: Tensor, *args: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """CTAugment's op ``name`` with its arguments (N,) in [0, 1] on every image: a one-op policy."""
    assert len(args) == len(BINS[name]), f"{name} takes {len(BINS[name])} argument(s)"
    full = torch.zeros(len(x), 1, 2, dtype=torch.float64)
    for j, v in enumerate(args):
        full[:, 0, j] = torch.as_tensor(v, dtype=torch.float64).expand(len(x))
    return apply_ops(x, torch.full((len(x), 1), CTA_OP_NAMES.index(name)), full, generator, grouped=False)


CTA_OPS = {name: functools.partial(_one_op, name) for name in CTA_OP_NAMES}


def _apply_grouped(x: Tensor, op: Tensor, args: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
    return apply_slot(x, op, args, cy, cx, grouped=True)


def _apply_masked(x: Tensor, op: Tensor, args: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
    return apply_slot(x, op, args, cy, cx, grouped=False)


def _strong_view(cta: CTAugment, x: Tensor, *, flip: bool, generator: torch.Generator) -> Tensor:
    """The unlabeled strong views alone: ``views`` with no labeled images to probe."""
    return cta.views(x, x[:0], flip=flip, generator=generator)[0]


METHODS = (
    Image.Resampling.LANCZOS,
    Image.Resampling.BICUBIC,
    Image.Resampling.BILINEAR,
    Image.Resampling.BOX,
    Image.Resampling.HAMMING,
    Image.Resampling.NEAREST,
)


def official(name: str, im: Image.Image, args: list[float], centre: tuple[int, int]) -> Image.Image:
    """OPS[name].f(im, *args) of the official code (cutout's random centre given)."""
    a = args[0] if args else None
    if name in ("brightness", "color", "contrast", "sharpness"):
        return getattr(ImageEnhance, name.capitalize())(im).enhance(0.1 + 1.9 * a)
    if name in ("autocontrast", "equalize", "invert"):
        return Image.blend(im, getattr(ImageOps, name)(im), a)
    if name in ("blur", "smooth"):
        return Image.blend(im, im.filter(getattr(ImageFilter, name.upper())), a)
    if name == "identity":
        return im
    if name == "posterize":
        return ImageOps.posterize(im, 1 + int(a * 7.999))
    if name == "solarize":
        return ImageOps.solarize(im, int(a * 255.999))
    if name == "rotate":
        return im.rotate(int(np.round((2 * a - 1) * 45)))
    if name == "rescale":
        s, scale = im.size, a * 0.25
        crop = (scale * s[0], scale * s[1], s[0] * (1 - scale), s[1] * (1 - scale))
        return im.crop(crop).resize(im.size, METHODS[int(args[1] * 5.99)])
    if name == "cutout":
        im = im.copy()
        size = 1 + int(a * min(im.size) * 0.499)
        img_height, img_width = im.size  # sic: (width, height); consistent, so right for any shape
        height_loc, width_loc = centre
        upper = (max(0, height_loc - size // 2), max(0, width_loc - size // 2))
        lower = (min(img_height, height_loc + size // 2), min(img_width, width_loc + size // 2))
        pixels = im.load()
        for i in range(upper[0], lower[0]):
            for j in range(upper[1], lower[1]):
                pixels[i, j] = 127 if im.mode == "L" else (127, 127, 127)
        return im
    v = (2 * a - 1) * 0.3  # shear_x/y, translate_x/y
    coef = {
        "shear_x": (1, v, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, v, 1, 0),
        "translate_x": (1, 0, v, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, v),
    }[name]
    return im.transform(im.size, Image.AFFINE, coef)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    if not (SHARED / "cifar10_device.npz.xz").exists():
        pytest.skip(f"offline datasets not found at {SHARED}")
    return {"cifar": read_head(SHARED / "cifar10_device.npz.xz", 32), "fer": read_head(SHARED / "fer2013.npz.xz", 16)}


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


def _argument_rounds(name: str, n: int) -> list[list[torch.Tensor]]:
    """A sweep of [0, 1] (both ends included) and 3 rounds of uniform draws, one value per image."""
    nargs = len(BINS[name])
    sweep = [torch.linspace(0, 1, n, dtype=torch.float64)] * nargs
    if name == "rescale":  # crop edges landing on .5 (Python rounds half to even), every method
        sweep = [
            (torch.arange(n, dtype=torch.float64) / (n // 2)).clamp(max=1),
            (torch.arange(n, dtype=torch.float64) % 6 + 0.5) / 6,
        ]
    g = torch.Generator().manual_seed(len(name))
    return [sweep] + [[torch.rand(n, generator=g, dtype=torch.float64) for _ in range(nargs)] for _ in range(3)]


@pytest.mark.parametrize("dataset", ["cifar", "fer"])
@pytest.mark.parametrize("name", CTA_OP_NAMES)
def test_op_matches_official_pil_exactly(images, dataset, name):
    arr = images[dataset]
    x = _nchw(arr)
    n, _, h, w = x.shape
    for r, args in enumerate(_argument_rounds(name, n)):
        gen = torch.Generator().manual_seed(r)
        out = CTA_OPS[name](x, *args, generator=gen)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        got = out.permute(0, 2, 3, 1).numpy()
        gen.manual_seed(r)  # the cutout centre: column then row, as apply_ops draws them
        cx, cy = torch.randint(0, w, (n,), generator=gen), torch.randint(0, h, (n,), generator=gen)
        for k, a in enumerate(arr):
            im = Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a)
            values = [float(v[k]) for v in args]
            ref = np.asarray(official(name, im, values, (int(cx[k]), int(cy[k])))).reshape(a.shape)
            assert np.array_equal(got[k], ref), f"{name}{tuple(values)} image {k}"


def test_translate_is_identity_like_the_official_code(images):
    """Quirk kept: translate puts (2a-1)*0.3 *pixels* into the affine matrix; nearest lookup rounds it away."""
    x = _nchw(images["cifar"])
    for name in ("translate_x", "translate_y"):
        for v in (0.0, 0.3, 0.99, 1.0):
            assert torch.equal(CTA_OPS[name](x, torch.full((len(x),), v)), x)
    assert not torch.equal(CTA_OPS["shear_x"](x, torch.full((len(x),), 0.9)), x)


def test_official_float_uint8_roundtrip_is_exact():
    """The official pipeline feeds PIL np.round(127.5 * (1 + x)) of x = u * (2/255) - 1 (float32):
    every uint8 value comes back unchanged, so the ops can work on uint8 directly."""
    u = np.arange(256, dtype=np.float32)
    x = u * np.float32(2.0 / 255) - np.float32(1.0)
    assert np.array_equal(np.round(127.5 * (1 + x)).clip(0, 255).astype("uint8"), np.arange(256))


def test_grouped_cpu_path_equals_masked_path(images):
    """CPU runs each stage on its own samples; CUDA the sync-free masked path: same images."""
    x = _nchw(images["cifar"]).repeat(4, 1, 1, 1)
    cta = CTAugment()
    for seed in range(3):
        ops, args = cta.sample(len(x), torch.Generator().manual_seed(seed), probe=True)
        a = apply_ops(x, ops, args, torch.Generator().manual_seed(9), grouped=True)
        b = apply_ops(x, ops, args, torch.Generator().manual_seed(9), grouped=False)
        assert torch.equal(a, b)
    op = torch.arange(len(x)) % len(CTA_OP_NAMES)  # every op at least 6 times
    args = torch.rand(len(x), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cy, cx = torch.randint(0, 32, (2, len(x)), generator=torch.Generator().manual_seed(2))
    assert torch.equal(_apply_grouped(x, op, args, cy, cx), _apply_masked(x, op, args, cy, cx))


# --------------------------------------------------------------------------- the policy


def test_sampler_draws_only_bins_above_threshold():
    cta = CTAugment(threshold=0.8)
    cta.rates.mul_(0.5)  # p = (0.5 + 0.01) / 0.51 = 1 everywhere ...
    cta.rates[:, :, 3] = 1.0  # ... except: bin 3 on top; the others (0.51 / 1.01 = 0.505) < 0.8
    rescale = CTA_OP_NAMES.index("rescale")
    cta.rates[rescale, 1, :] = 0.8  # all 6 method bins (0.81 / 1.01 = 0.802 >= 0.8) except bin 3 (=1)
    ops, args = cta.sample(20000, torch.Generator().manual_seed(0))
    counts = torch.bincount(ops.view(-1), minlength=len(CTA_OP_NAMES))
    assert counts.min() > 0.8 * counts.float().mean()  # ops uniform over all 19 (identity included)
    for i, name in enumerate(CTA_OP_NAMES):
        a = args[ops == i]  # (k, 2)
        for j, nb in enumerate(BINS[name]):
            b = torch.floor(a[:, j] * nb).long()
            if (name, j) == ("rescale", 1):
                assert set(b.tolist()) == set(range(6))
            else:
                assert (b == 3).all(), name
        assert (a[:, len(BINS[name]) :] == 0).all()
    # positions inside the bin are uniform: the fraction part covers [0, 1)
    rot = args[ops == CTA_OP_NAMES.index("rotate")][:, 0] * 17 - 3
    assert rot.min() < 0.02 and rot.max() > 0.98


def test_probe_arguments_are_uniform_and_ignore_the_rates():
    cta = CTAugment()
    cta.rates.zero_()
    ops, args = cta.sample(20000, torch.Generator().manual_seed(0), probe=True)
    a = args[ops == CTA_OP_NAMES.index("rotate")][:, 0]
    hist = torch.histc(a.float(), bins=17, min=0, max=1)
    assert hist.min() > 0.7 * hist.mean()


def _official_update(rates: dict, policies, proximities, decay=0.99):
    """cta/lib/train.py + CTAugment.update_rates, transcribed (float64 Python lists)."""
    for policy, prox in zip(policies, proximities):
        for k, args in policy:
            for p, rate in zip(args, rates[k]):
                b = int(p * len(rate) * 0.999)
                rate[b] = rate[b] * decay + prox * (1 - decay)


def test_update_equals_the_official_sequential_loop():
    g = torch.Generator().manual_seed(0)
    cta = CTAugment()
    ref = {name: [[1.0] * nb for nb in BINS[name]] for name in CTA_OP_NAMES}
    for step in range(30):
        n = 64
        ops, args = cta.sample(n, g, probe=True)
        if step % 3 == 0:  # crowd few bins so one step hits a bin many times
            ops = ops % 3
            args = (args * 2).floor() / 2 + 0.01
        prox = torch.rand(n, generator=g, dtype=torch.float64)
        cta.update(ops, args, prox)
        policies = [
            [
                (CTA_OP_NAMES[int(o)], [float(v) for v in a[: len(BINS[CTA_OP_NAMES[int(o)]])]])
                for o, a in zip(ops[p], args[p])
            ]
            for p in range(n)
        ]
        _official_update(ref, policies, prox.tolist())
    for i, name in enumerate(CTA_OP_NAMES):
        for j, nb in enumerate(BINS[name]):
            assert torch.allclose(
                cta.rates[i, j, :nb], torch.tensor(ref[name][j], dtype=torch.float64), rtol=0, atol=1e-12
            ), name
    assert (cta.rates[cta.valid] != 1).sum() > 100  # the rates did move


def test_update_known_values():
    """Two probes on rotate bin 8 (prox 1 then 0), and the 0.999 quirk: an argument just inside bin 16
    updates bin 15."""
    cta = CTAugment()
    rot = CTA_OP_NAMES.index("rotate")
    ops = torch.tensor([[rot, CTA_OP_NAMES.index("identity")], [rot, rot]])
    args = torch.tensor([[[8.5 / 17, 0], [0, 0]], [[8.2 / 17, 0], [16.001 / 17, 0]]], dtype=torch.float64)
    cta.update(ops, args, torch.tensor([1.0, 0.0], dtype=torch.float64))
    expect = torch.ones(17, dtype=torch.float64)
    expect[8] = (1 * 0.99 + 1.0 * 0.01) * 0.99 + 0.0  # = 0.99
    expect[15] = 0.99  # int(16.001 * 0.999) = 15
    assert torch.allclose(cta.rates[rot, 0], expect, rtol=0, atol=1e-15)
    assert abs(float(cta.rates[cta.valid].sum()) - (int(cta.valid.sum()) - 2 * 0.01)) < 1e-12  # nothing else moved


def test_proximity():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.25, 0.25]])
    assert torch.allclose(proximity(p, torch.tensor([0, 0, 0])), torch.tensor([1.0, 0.0, 0.5]))


def test_state_roundtrip_and_stats():
    g = torch.Generator().manual_seed(0)
    a = CTAugment()
    ops, args = a.sample(64, g, probe=True)
    a.update(ops, args, torch.rand(64, generator=g, dtype=torch.float64))
    b = CTAugment()
    rates = b.rates
    b.load_state_dict(a.state_dict())
    assert b.rates is rates and torch.equal(b.rates, a.rates)  # in place: a CUDA graph keeps reading it
    text = stats_text(a.to_json())
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(CTA_OP_NAMES)
    rescale = next(ln for ln in lines if ln.startswith("rescale"))
    assert len(rescale.split(" / ")[0].split()) == 1 + 17 and len(rescale.split(" / ")[1].split()) == 6


def test_strong_view_is_deterministic_and_has_cutout(images):
    x = _nchw(images["cifar"][:1]).expand(64, -1, -1, -1).contiguous()
    cta = CTAugment()
    runs = [_strong_view(cta, x, flip=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert len({bytes(o.numpy()) for o in runs[0]}) > 50
    grey = (runs[0] == 127).all(1, keepdim=True).float()
    # the final cutout(1): a 16x16 square clipped at the border keeps at least 8x8 pixels
    assert (torch.nn.functional.avg_pool2d(grey, 8, stride=1).amax((1, 2, 3)) == 1).all()


def test_views_returns_the_probes_of_the_policies_it_reports(images):
    """The trainer's one-pass call: probes are the labeled images under the returned probe policies
    (checked on the probes without a cutout op, whose random centre comes from the shared stream)."""
    x = _nchw(images["cifar"])
    unl, lab = x.repeat(3, 1, 1, 1), x.flip(0)
    cta = CTAugment()
    strong, probes, ops, args = cta.views(unl, lab, flip=True, generator=torch.Generator().manual_seed(0))
    assert strong.shape == unl.shape and probes.shape == lab.shape and ops.shape == (len(lab), 2)
    again = apply_ops(lab, ops, args, torch.Generator().manual_seed(1))
    plain = (ops != CTA_OP_NAMES.index("cutout")).all(1)
    assert plain.sum() > 20 and torch.equal(again[plain], probes[plain])
    assert (args[..., 0] < 1).all() and not torch.equal(probes, lab)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_equals_cpu_and_never_syncs(images):
    """The masked path on CUDA gives the CPU (grouped) images; sampling, ops and the update run
    without a host sync; the rates end equal."""
    x = _nchw(images["cifar"]).repeat(8, 1, 1, 1)
    cpu, gpu = CTAugment(), CTAugment(device="cuda")
    ops, args = cpu.sample(len(x), torch.Generator().manual_seed(0), probe=True)
    op1 = torch.arange(len(x)) % len(CTA_OP_NAMES)
    a1 = torch.rand(len(x), 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    c = torch.randint(0, 32, (2, len(x)), generator=torch.Generator().manual_seed(4))
    assert torch.equal(
        _apply_masked(x.cuda(), op1.cuda(), a1.cuda(), c[0].cuda(), c[1].cuda()).cpu(),
        _apply_grouped(x, op1, a1, c[0], c[1]),
    )
    prox = torch.rand(len(x), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.cuda.set_sync_debug_mode("error")
    try:
        g = torch.Generator("cuda").manual_seed(0)
        _strong_view(gpu, x.cuda(), flip=True, generator=g)
        gpu.views(x.cuda(), x[:64].cuda(), flip=True, generator=g)
        gpu.update(ops.cuda(), args.cuda(), prox.cuda())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    cpu.update(ops, args, prox)
    assert torch.allclose(gpu.rates.cpu(), cpu.rates, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- in the trainer


def _tiny(tmp_path, **kw):
    return tiny_config(tmp_path, **{"strong_augment": "cta", **kw})


def test_training_moves_the_rates_and_resume_restores_them_exactly(tmp_path, monkeypatch):
    """A CTA run killed after its step-16 checkpoint and resumed ends with the rates, weights and
    metrics of an uninterrupted run; the run directory holds cta.json and `fixmatch cta-stats` reads it."""
    from fixmatch.cli import main

    a, b = kill_then_resume(_tiny, tmp_path, monkeypatch, kill_at=16)
    assert torch.equal(a["cta"]["rates"], b["cta"]["rates"])
    rates = a["cta"]["rates"]
    valid = CTAugment().valid
    # 24 steps x 8 probes x 2 ops: many bins moved, all stay in [0, 1]
    assert (rates[valid] != 1).sum() > 50 and rates.min() >= 0 and rates.max() <= 1
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    stats = json.loads((tmp_path / "a" / "run" / "cta.json").read_text())
    assert stats["step"] == 24 and stats["threshold"] == 0.8
    assert torch.allclose(
        torch.tensor(stats["ops"]["rotate"]["rates"][0], dtype=torch.float64),
        rates[CTA_OP_NAMES.index("rotate"), 0],
        atol=1e-6,
    )
    assert main(["cta-stats", str(tmp_path / "a" / "run")]) == 0


def test_ra_runs_are_unchanged_and_have_no_cta_state(tmp_path):
    from fixmatch.training.train import train

    train(_tiny(tmp_path, strong_augment="ra", steps=8), log=lambda *_: None)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["cta"] is None
    assert not (tmp_path / "run" / "cta.json").exists()


def test_bad_strong_augment_and_missing_stats_are_clear_errors(tmp_path, capsys):
    from fixmatch.cli import main
    from fixmatch.errors import UserError
    from fixmatch.training.resolve import resolve

    with pytest.raises(UserError, match="choose from ra, cta"):
        resolve(_tiny(tmp_path, strong_augment="autoaugment"))
    assert main(["cta-stats", str(tmp_path)]) == 2
    assert "--strong-augment cta" in capsys.readouterr().err


@cuda
def test_cuda_graph_captures_views_that_follow_the_rates(images):
    """As GraphedAugment does: the strong and probe views captured once; a replay draws fresh random
    numbers and reads the rates tensor as it is at replay time (updated in place)."""
    x = _nchw(images["cifar"]).repeat(4, 1, 1, 1).cuda()
    cta, g = CTAugment(device="cuda"), torch.Generator("cuda").manual_seed(0)

    def fn():
        return (_strong_view(cta, x, flip=True, generator=g), *cta.sample(len(x), g))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(), fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(g)
    with torch.cuda.graph(graph):
        out = fn()
    graph.replay()
    first = [t.clone() for t in out]
    graph.replay()
    assert not torch.equal(first[0], out[0])
    cta.rates[:, :, 1:] = 0.0  # only bin 0 left above the threshold
    graph.replay()
    ops, args = out[1], out[2]
    nb = cta.nbins[ops]
    assert ((args * nb).floor()[nb > 0] == 0).all()


# --------------------------------------------------------------------------- the official probe rules
# cta/lib/train.py:63-76 (CTAClassifySemi.train_step), restated:
#     x, y = gen_labeled(), gen_unlabeled()              # the batch, its probes and probe policies
#     v = run([classify_op, train_op, update_step],      # ONE session.run: probes classified while
#             feed_dict={y: y['image'], x: x['probe'],   # the step trains; classify_op reads the EMA
#                        xt: x['image'], label: ...})    # weights before the step's EMA assignment
#     for p in range(len(lx)):                           # after the step: the host-side update
#         error = lx[p]; error[label[p]] -= 1
#         update_rates(x['policy'][p], 1 - 0.5 * |error|_1)
# fixmatch.py:137-138: classify_op = softmax(classifier(x_in, getter=ema_getter, training=False)):
#     the EMA weights, BatchNorm in inference mode (classify_raw, the raw model, is "for debugging").
# fixmatch.py:32-38 (AugmentPoolCTACutOut, labeled image x.ndim == 3): probe = apply(x, policy) and
#     image = x: the probe is the very weak view the labeled loss trains on, under a probe policy
#     (uniform arguments, libml/ctaugment.py:61-67), with no cutout appended (the cutout op is
#     appended to the unlabeled strong policies only, fixmatch.py:40).
# fixmatch.py:41 + libml/augment.py:406-411 ('d.d.d'): the strong view is CTA on the *second* of two
#     independent TF weak views of the unlabeled image, not on the first (the weak branch's).


def _cta_digits_trainer():
    return tiny_trainer(tiny_config(strong_augment="cta", steps=100, device="cpu", seed=1))[0]


def _rates_after(rates: Tensor, model: torch.nn.Module, normalize, probes, ops, args, labels) -> Tensor:
    """The official update of ``rates`` from ``model``'s softmax on the probes, on a fresh CTAugment."""
    ref = CTAugment()
    ref.rates.copy_(rates)
    with torch.no_grad():
        probs = torch.softmax(model(normalize(probes)).float(), 1)
    ref.update(ops, args, proximity(probs, labels))
    return ref.rates


def test_trainer_classifies_the_probes_with_the_ema_model_in_eval_mode_before_the_step():
    """One trainer step, recomputed from outside: its probes are the labeled weak views it trains on
    under the probe policies it reports (no cutout), with their labels; the rates move exactly as the
    official update with the EMA model's eval-mode softmax, the EMA weights from before the step; the
    step's own strong views were drawn with the rates from before its probes. The raw model, the EMA
    model in train mode and the EMA model after the step would each give other rates (checked)."""
    trainer = _cta_digits_trainer()
    for _ in range(3):  # the EMA model and the raw one part ways; the rates move off 1
        trainer.step()
    seen: dict = {}
    draw = trainer.make_batch

    def recording_draw(step):
        seen["rates_at_draw"] = trainer.cta.rates.clone()
        seen["batch"] = draw(step)
        return seen["batch"]

    trainer.make_batch = recording_draw
    ema_before = copy.deepcopy(trainer.ema.model)
    rates_before = trainer.cta.rates.clone()
    trainer.step()
    x, y_l, probe = seen["batch"].x, seen["batch"].y_l, seen["batch"].probe
    probes, ops, args, labels = probe  # the probes travel with the batch
    b = len(y_l)

    assert torch.equal(seen["rates_at_draw"], rates_before)  # this batch's strong views: the rates before
    assert torch.equal(labels, y_l) and len(probes) == b
    cutout = CTA_OP_NAMES.index("cutout")
    plain = (ops != cutout).all(1)  # a cutout op's centre comes from the shared stream: not replayable
    assert plain.sum() >= 2
    assert torch.equal(apply_ops(x[:b], ops, args, torch.Generator())[plain], probes[plain])
    assert ((probes == 127).flatten(1).sum(1)[plain] < 16).all()  # no 16x16 final cutout on a probe

    official = _rates_after(rates_before, ema_before.eval(), trainer.normalize, probes, ops, args, labels)
    assert torch.allclose(trainer.cta.rates, official, rtol=0, atol=1e-12)
    assert not torch.equal(trainer.cta.rates, rates_before)
    wrong = {
        "raw model": _rates_after(rates_before, trainer.model, trainer.normalize, probes, ops, args, labels),
        "EMA in train mode": _rates_after(
            rates_before, copy.deepcopy(ema_before).train(), trainer.normalize, probes, ops, args, labels
        ),
        "EMA after the step": _rates_after(
            rates_before, trainer.ema.model, trainer.normalize, probes, ops, args, labels
        ),
    }
    for name, rates in wrong.items():
        assert (rates - official).abs().max() > 1e-9, f"the test cannot tell the {name} apart"


def test_the_strong_view_is_cta_on_an_own_weak_view(monkeypatch):
    """With the CTA ops and the final cutout made identities, what is left of the strong view is its
    weak flip/shift: each strong image is one reflect-padded shift of its raw unlabeled image (not a
    shift of the weak branch's view), and the two views are independent draws."""
    import fixmatch.augment.ctaugment as cta_module

    monkeypatch.setattr(cta_module, "apply_ops", lambda x, *_a, **_k: x)
    monkeypatch.setattr(CTAugment, "_final_cutout", lambda self, x, g: x)
    trainer = _cta_digits_trainer()
    li, ui = torch.arange(8), torch.arange(0, 240, 5)
    out = trainer.augment_indices(li, ui).x
    u = len(ui)
    weak, strong, raw = out[8 : 8 + u], out[8 + u :], trainer.x_unl[ui]
    padded = torch.nn.functional.pad(raw.float(), (1, 1, 1, 1), mode="reflect").to(torch.uint8)
    for k in range(u):  # digits: 8x8, shift up to round(0.125 * 8) = 1, no flip
        shifts = {bytes(padded[k, :, i : i + 8, j : j + 8].contiguous().numpy()) for i in range(3) for j in range(3)}
        assert bytes(strong[k].numpy()) in shifts, k
    assert (weak != strong).flatten(1).any(1).float().mean() > 0.5  # 9 shifts each: mostly different draws


def test_the_strong_view_flips_and_shifts_like_the_weak_view(monkeypatch):
    """The same decoding as test_augment's weak-view test, on CTAugment.views' strong output with the
    ops made identities: flip p=0.5, shift uniform over -4..4 at 32 px."""
    import fixmatch.augment.ctaugment as cta_module

    monkeypatch.setattr(cta_module, "apply_ops", lambda x, *_a, **_k: x)
    monkeypatch.setattr(CTAugment, "_final_cutout", lambda self, x, g: x)
    n = 4000
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    img = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8).expand(n, -1, -1, -1).contiguous()
    strong, *_ = CTAugment().views(img, img[:8], flip=True, generator=torch.Generator().manual_seed(0))
    dy = strong[:, 0, 16, 16].long() - 16
    flipped = strong[:, 1, 16, 17] < strong[:, 1, 16, 16]
    dx = torch.where(flipped, 15 - strong[:, 1, 16, 16].long(), strong[:, 1, 16, 16].long() - 16)
    assert 0.45 < flipped.float().mean().item() < 0.55  # binomial(4000, 0.5): sd 0.008
    for d in (dx, dy):
        counts = torch.bincount(d + 4, minlength=9)
        assert len(counts) == 9 and (counts > n / 9 * 0.8).all() and (counts < n / 9 * 1.2).all()
