"""Does a fast configuration compute the same function as the plain one? Two trainers from the same
initial weights and batches, a few steps each, and how far their losses and updates drift apart."""

from __future__ import annotations

import argparse

import torch

from fixmatch.training.bench import build_trainer


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def compare_paths(
    plain_args: argparse.Namespace, fast_args: argparse.Namespace, steps: int = 3, return_trainers: bool = False
):
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
    report = {
        "steps": steps,
        "loss_plain": la,
        "loss_fast": lb,
        "max_loss_rel_diff": max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb)),
        # how far the fast path's total parameter update strays from the plain one's
        "update_rel_diff": float((da - db).norm() / da.norm().clamp_min(1e-12)),
        "update_cosine": float(torch.nn.functional.cosine_similarity(da, db, dim=0)),
        "fast": b.speedups.describe(),
        "plain": a.speedups.describe(),
    }
    return (report, (a, b)) if return_trainers else report
