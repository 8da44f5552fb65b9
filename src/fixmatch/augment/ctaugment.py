"""CTAugment (control-theory augmentation, ReMixMatch/FixMatch) on uint8 tensors (N, C, H, W).

What the official code (google-research/fixmatch, libml/ctaugment.py + cta/lib/train.py +
fixmatch.py) does, and this module reproduces:

* 19 ops (18 with arguments, plus identity). Each argument lies in [0, 1] and is split into bins
  (17; posterize 8; rescale 17 and 6). A strong view draws ``depth`` = 2 ops uniformly, each
  argument's bin with probability from that bin's rate, a uniform position inside the bin, and ends
  with the cutout op at level 1.
* Probes: every labeled image is also augmented with uniform random arguments; the EMA model's
  prediction p on it gives ``proximity = 1 - 0.5 * |p - onehot(y)|_1`` and each (op, argument, bin)
  the probe used moves ``rate <- decay * rate + (1 - decay) * proximity``.

Read from the official code: the strong view is CTA on the *second*
independent TF weak view (flip + reflect shift) of the pair the unlabeled pipeline makes, the weak
view being the first. The probe prediction is ``classify_op``: the EMA getter, ``training=False``,
run in the same ``session.run`` as ``train_op`` with no control dependency between them; the EMA
assignment waits for the gradient step, and the probe forward (64 images, inference) is ordinarily
done long before, so it reads the EMA weights from before the step's update (formally a race). Here:
the EMA model in eval mode, before the step's update.

The ops are the op table's (kernels.py), shared with RandAugment; this module's magnitude map
(``table_args``) turns a policy's arguments in [0, 1] into the table's, so every op equals the official
``OPS[name].f`` on a PIL image bit for bit (Pillow 10-13 arithmetic: 16.16 fixed-point affine with black
fill, float32 blends, float 3x3/5x5 kernels, 22-bit fixed-point resampling coefficients), per sample and
batched; the rates live on the device and are updated there without a host sync, so a CUDA graph can
capture the sampling (the rates tensor is updated in place).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from fixmatch.augment.kernels import ENHANCE, IMAGE_OPS, apply, cutout_at, is_op
from fixmatch.augment.pil_resample import RESCALE_METHODS
from fixmatch.augment.weak import weak_augment
from fixmatch.errors import UserError
from fixmatch.outputs import write_text_atomic

__all__ = ["BINS", "CTA_OP_NAMES", "CTAugment", "apply_ops", "proximity"]

# The official registry in its registration order (random.choice draws from this list): each op's
# arguments, split into this many bins. The names are the op table's (kernels.py).
BINS: dict[str, tuple[int, ...]] = {
    "autocontrast": (17,),
    "blur": (17,),
    "brightness": (17,),
    "color": (17,),
    "contrast": (17,),
    "cutout": (17,),
    "equalize": (17,),
    "invert": (17,),
    "identity": (),
    "posterize": (8,),
    "rescale": (17, 6),
    "rotate": (17,),
    "sharpness": (17,),
    "shear_x": (17,),
    "shear_y": (17,),
    "smooth": (17,),
    "solarize": (17,),
    "translate_x": (17,),
    "translate_y": (17,),
}
CTA_OP_NAMES: tuple[str, ...] = tuple(BINS)
MAX_ARGS, MAX_BINS = 2, 17
GEOM_FILL = 0  # the official geometric ops pass no fillcolor: black


def _nbins_table() -> Tensor:
    t = torch.zeros(len(CTA_OP_NAMES), MAX_ARGS, dtype=torch.long)
    for i, bins in enumerate(BINS.values()):
        t[i, : len(bins)] = torch.tensor(bins, dtype=torch.long)
    return t


NBINS = _nbins_table()  # (19, 2): bins per op and argument, 0 where the op has no such argument


# --------------------------------------------------------------------------- the magnitude map


def _cutout_side(a: Tensor, h: int, w: int) -> Tensor:
    """cutout(level): size = 1 + int(level * min(W, H) * 0.499), rows [cy - size//2, cy + size//2):
    an even side, size//2 * 2."""
    size = 1 + torch.trunc(a * min(h, w) * 0.499)
    return 2 * torch.div(size, 2, rounding_mode="floor")


def table_args(op: Tensor, args: Tensor, cy: Tensor, cx: Tensor, h: int, w: int) -> Tensor:
    """A slot's arguments in [0, 1] (N, 2) -> the op table's (N, 3) in PIL units, the official
    ``OPS[name].f`` formulas: enhancers factor 0.1 + 1.9 a; autocontrast/blur/equalize/invert/smooth
    ``Image.blend(x, op(x), a)``; posterize 1 + int(a * 7.999) bits; solarize threshold int(a * 255.999);
    rotate ``int(round((2a-1)*45))`` degrees (numpy rounds half to even, as torch.round does); shear and
    translate ``(2a-1)*0.3`` *in the affine matrix*, i.e. a translation of at most 0.3 pixel, which PIL's
    nearest-neighbour lookup rounds away; rescale a crop of 0.25 a per side and method int(b * 5.99);
    cutout (above) at the centre (cy, cx)."""
    a, b = args[:, 0], args[:, 1]
    signed = 2 * a - 1
    first: dict[str | frozenset, Tensor] = {
        "rotate": torch.round(signed * 45),
        frozenset({"shear_x", "shear_y", "translate_x", "translate_y"}): signed * 0.3,
        ENHANCE: 0.1 + 1.9 * a,
        IMAGE_OPS: a,
        "posterize": 1 + torch.trunc(a * 7.999),
        "solarize": torch.trunc(a * 255.999),
        "rescale": a * 0.25,
        "cutout": _cutout_side(a, h, w),
    }
    arg0 = torch.zeros_like(a)
    for which, v in first.items():
        arg0 = torch.where(is_op(op, CTA_OP_NAMES, which), v, arg0)
    method = torch.trunc(b * 5.99).clamp_(0, len(RESCALE_METHODS) - 1)
    arg1 = torch.where(is_op(op, CTA_OP_NAMES, "rescale"), method, cy.to(a.dtype))
    return torch.stack((arg0, arg1, cx.to(a.dtype)), 1)


def apply_slot(x: Tensor, op: Tensor, args: Tensor, cy: Tensor, cx: Tensor, grouped: bool | None = None) -> Tensor:
    """op[k] (an index into CTA_OP_NAMES) with arguments args[k] (2,) in [0, 1] on image k, a cutout op
    centred at (cy[k], cx[k]), through the op table with black geometric fill."""
    h, w = x.shape[2:]
    table = table_args(op, args.to(torch.float64), cy, cx, h, w)
    return apply(x, op, table, CTA_OP_NAMES, fill=GEOM_FILL, grouped=grouped)


def apply_ops(
    x: Tensor, ops: Tensor, args: Tensor, generator: torch.Generator | None = None, grouped: bool | None = None
) -> Tensor:
    """Apply a policy: ops (N, depth) long, args (N, depth, 2) float64, slot after slot, like the
    official ``apply``. The cutout centres are drawn for every sample and slot (a fixed stream)."""
    n, _, h, w = x.shape
    for s in range(ops.shape[1]):
        cx = torch.randint(0, w, (n,), device=x.device, generator=generator)
        cy = torch.randint(0, h, (n,), device=x.device, generator=generator)
        x = apply_slot(x, ops[:, s], args[:, s], cy, cx, grouped)
    return x


# --------------------------------------------------------------------------- the policy


def proximity(probs: Tensor, labels: Tensor) -> Tensor:
    """1 - 0.5 * sum |p - onehot(y)|: 1 for a confident correct prediction, 0 for a confident wrong one."""
    onehot = (torch.arange(probs.shape[1], device=probs.device) == labels.unsqueeze(1)).to(probs.dtype)  # no sync
    return 1 - 0.5 * (probs - onehot).abs().sum(1)


class CTAugment:
    """The bin rates of every (op, argument), a (19, 2, 17) float64 tensor on the device, with the
    official sampler, probe policy and update. ``threshold`` 0.80 is what the official FixMatch run
    uses (cta/lib/train.py's ``--ath`` default; the CTAugment class itself defaults to 0.85)."""

    def __init__(
        self, depth: int = 2, threshold: float = 0.80, decay: float = 0.99, device: torch.device | str = "cpu"
    ):
        self.depth, self.threshold, self.decay = depth, threshold, decay
        self.nbins = NBINS.to(device)
        valid = torch.arange(MAX_BINS, device=device) < self.nbins.unsqueeze(-1)  # (19, 2, 17)
        self.valid = valid
        self.rates = valid.to(torch.float64)  # official: np.ones per argument

    # ---- sampling
    def probabilities(self) -> Tensor:
        """rate_to_p per (op, argument): (rate + 1 - decay) / max, zeroed below the threshold."""
        p = torch.where(self.valid, self.rates + (1 - self.decay), 0.0)
        p = p / p.amax(-1, keepdim=True).clamp(min=1e-300)
        return torch.where(p < self.threshold, 0.0, p)

    def sample(self, n: int, generator: torch.Generator | None, probe: bool = False) -> tuple[Tensor, Tensor]:
        """A policy per sample: ops (n, depth) long, args (n, depth, 2) float64 (0 where unused).
        probe: uniform arguments; otherwise bin ~ p / sum(p), then uniform inside the bin."""
        dev = self.rates.device
        ops = torch.randint(0, len(CTA_OP_NAMES), (n, self.depth), device=dev, generator=generator)
        r = torch.rand(n, self.depth, MAX_ARGS, device=dev, generator=generator, dtype=torch.float64)
        u = torch.rand(n, self.depth, MAX_ARGS, device=dev, generator=generator, dtype=torch.float64)
        nb = self.nbins[ops]
        if probe:
            return ops, torch.where(nb > 0, r, 0.0)
        p = self.probabilities()[ops]  # (n, depth, 2, 17)
        cdf = p.cumsum(-1)
        value = (cdf <= u.unsqueeze(-1) * cdf[..., -1:]).sum(-1)  # inverse CDF; zero-p bins never hit
        last = torch.where(p > 0, torch.arange(MAX_BINS, device=dev), 0).amax(-1)
        value = torch.minimum(value, last)  # guards u * total rounding up to total
        return ops, torch.where(nb > 0, (value + r) / nb.clamp(min=1), 0.0)

    def views(
        self,
        unlabeled: Tensor,
        labeled_weak: Tensor,
        *,
        flip: bool,
        generator: torch.Generator,
        grouped: bool | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step's CTA images: the unlabeled strong views (an own weak flip/shift, the official TF pair
        augmentation, then the CTA policy, then the cutout op at level 1) and the probes of the labeled
        weak views (policies drawn with probe=True: uniform arguments), all policies applied in
        one batched pass (on the CPU the cost is per op group, not per image). Returns strong, probes,
        probe ops, probe args."""
        n = unlabeled.shape[0]
        x = torch.cat([weak_augment(unlabeled, flip=flip, generator=generator), labeled_weak])
        ops, args = self.sample(n, generator)
        p_ops, p_args = self.sample(labeled_weak.shape[0], generator, probe=True)
        x = apply_ops(x, torch.cat([ops, p_ops]), torch.cat([args, p_args]), generator, grouped)
        return self._final_cutout(x[:n], generator), x[n:], p_ops, p_args

    def _final_cutout(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The ``cutout`` op at level 1 that fixmatch.py appends to every strong policy."""
        n, _, h, w = x.shape
        cx = torch.randint(0, w, (n,), device=x.device, generator=generator)
        cy = torch.randint(0, h, (n,), device=x.device, generator=generator)
        side = _cutout_side(torch.ones(n, dtype=torch.float64, device=x.device), h, w)
        return cutout_at(x, cy, cx, side.long())

    # ---- the update
    @torch.no_grad()
    def update(self, ops: Tensor, args: Tensor, prox: Tensor) -> None:
        """The official sequential update ``rate[bin] = rate[bin] * decay + prox * (1 - decay)`` over
        probes in batch order, ops in policy order, bin = int(arg * nbins * 0.999), as one batched
        step: a bin hit m times ends at ``decay**m * rate + (1 - decay) * sum_e decay**(later_e) * prox_e``
        (later_e: hits after e). Equal to the sequential float64 updates up to rounding; in place."""
        n, depth = ops.shape
        nb = self.nbins[ops]  # (n, depth, 2)
        valid = (nb > 0).reshape(-1)
        bins = torch.trunc(args.to(torch.float64) * nb * 0.999).long().clamp_(0, MAX_BINS - 1)
        arg_ix = torch.arange(MAX_ARGS, device=ops.device)
        key = ((ops.unsqueeze(-1) * MAX_ARGS + arg_ix) * MAX_BINS + bins).reshape(-1)
        key = torch.where(valid, key, 0)
        # same[e, f]: probe event f hits the bin of event e. Sums run as a small dense product and the
        # result is written, not accumulated: no atomics, so every run and every rank gets the same bits.
        same = ((key.unsqueeze(1) == key.unsqueeze(0)) & valid.unsqueeze(0)).to(torch.float64)
        later = torch.triu(same, diagonal=1).sum(1)  # hits of the same bin after this one
        p = prox.to(torch.float64).view(n, 1).expand(n, depth * MAX_ARGS).reshape(-1)
        gain = torch.where(valid, (1 - self.decay) * self.decay**later * p, 0.0)
        flat = self.rates.view(-1)
        # every event of a bin (and an argument-less event, parked on bin 0) writes the same new value
        new = flat[key] * torch.pow(self.decay, same.sum(1)) + same @ gain
        flat.index_put_((key,), new)

    @torch.no_grad()
    def learn(
        self,
        model: torch.nn.Module,
        normalize: Callable[[Tensor], Tensor],
        images: Tensor,
        ops: Tensor,
        args: Tensor,
        labels: Tensor,
        dist=None,
    ) -> None:
        """Classify the probes with ``model`` (the trainer passes the EMA model, in eval mode, before
        the step's update: the official classify_op) and update the rates, all on the device. Under
        torchrun each rank classifies its slice of the global probe batch and the probabilities are
        all-gathered, so every rank applies the identical update (per-rank BatchNorm buffers would
        otherwise make the ranks' rates drift apart)."""
        world = dist.world if dist is not None and dist.active else 1
        part = images.tensor_split(world)[dist.rank] if world > 1 else images
        probs = torch.softmax(model(normalize(part)).float(), 1)
        if world > 1:
            chunks = [torch.empty_like(probs) for _ in range(world)]
            torch.distributed.all_gather(chunks, probs)
            probs = torch.cat(chunks)
        self.update(ops, args, proximity(probs, labels))

    # ---- state
    def state_dict(self) -> dict:
        return {
            "rates": self.rates.detach().cpu().clone(),
            "depth": self.depth,
            "threshold": self.threshold,
            "decay": self.decay,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rates.copy_(state["rates"].to(self.rates))  # in place: a captured CUDA graph reads this tensor

    def to_json(self) -> dict:
        """Rates and sampling probabilities per op and argument (bins), for the run directory."""
        rates, probs = self.rates.cpu(), self.probabilities().cpu()
        ops = {
            name: {
                "rates": [[round(float(v), 6) for v in rates[i, j, :nb]] for j, nb in enumerate(BINS[name])],
                "p": [[round(float(v), 6) for v in probs[i, j, :nb]] for j, nb in enumerate(BINS[name])],
            }
            for i, name in enumerate(CTA_OP_NAMES)
        }
        return {"depth": self.depth, "threshold": self.threshold, "decay": self.decay, "ops": ops}

    def write_json(self, path: Path, step: int) -> None:
        """The run directory's cta.json (read by ``fixmatch cta-stats``), replaced atomically."""
        write_text_atomic(path, json.dumps({"step": step, **self.to_json()}))


def stats_text(state: dict) -> str:
    """The official ``stats()`` layout: one line per op (sorted), the p of each bin, arguments split by /."""
    return "\n".join(
        "%-16s    %s" % (name, " / ".join(" ".join("%.2f" % v for v in arg) for arg in state["ops"][name]["p"]))
        for name in sorted(state["ops"])
    )


def read_stats(run_dir: str) -> dict:
    """cta.json of a run directory (or the file itself), for ``fixmatch cta-stats``."""
    path = Path(run_dir)
    path = path / "cta.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(
            f"no CTAugment statistics at {path}: they are written at each evaluation of a run "
            "trained with --strong-augment cta"
        )
    return json.loads(path.read_text())
