"""`fixmatch bench`: time the real training step (or only the augmentation) on synthetic or real data."""

from __future__ import annotations

import functools
import platform
import resource
import statistics
import time

import torch

from fixmatch.config import SPEED_SWITCHES, TrainConfig
from fixmatch.cpus import thread_count
from fixmatch.data import ImageDataset, load_dataset
from fixmatch.training.bench_options import BenchOptions
from fixmatch.training.devices import pick_device, sync
from fixmatch.training.resolve import resolve
from fixmatch.training.train import make_trainer


def synthetic_data(n: int, channels: int, size: int, num_classes: int, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return ImageDataset("synthetic", x, y, x[:256], y[:256], [str(i) for i in range(num_classes)])


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, data_dir) -> ImageDataset:
    """Benchmarks build many trainers on the same data: decode it once."""
    return load_dataset(name, data_dir)


def build_trainer(args: BenchOptions, data: ImageDataset | None = None):
    data = data or (
        cached_dataset(args.dataset, args.data_dir)
        if args.dataset
        else synthetic_data(
            max(4096, args.batch_size * (args.mu + 1) * 2), args.channels, args.image_size, args.num_classes
        )
    )
    cfg = resolve(
        TrainConfig(
            dataset=args.dataset or "cifar10",
            algorithm=args.algorithm,
            model=args.model,
            batch_size=args.batch_size,
            mu=args.mu,
            randaugment=args.randaugment,
            strong_augment=args.strong_augment,
            device=args.device,
            threads=args.threads,
            **{name: getattr(args, name) for name in SPEED_SWITCHES},
            num_labels=min(4000, len(data.y_train)) // data.num_classes * data.num_classes,
            steps=10**9,
            eval_every=10**9,
            progress=False,
            flip=True,
        )
    )
    torch.set_num_threads(thread_count(cfg.threads))
    device = pick_device(cfg.device)
    trainer = make_trainer(cfg, data, torch.arange(int(cfg.num_labels or 0)), device)
    return trainer, data, device


def timed(fn, n: int, device: torch.device) -> list[float]:
    """Milliseconds of each of n calls, synchronising the device so each call is complete."""
    out = []
    for _ in range(n):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # host RSS peak (KiB on Linux)


def summarize(ms: list[float]) -> dict:
    return {"median": round(statistics.median(ms), 3), "min": round(min(ms), 3), "max": round(max(ms), 3)}


def measure(args: BenchOptions, trainer=None) -> dict:
    """Time args' configuration (or an already built and warmed-up trainer of it)."""
    trainer, data, device = (trainer, None, trainer.device) if trainer else build_trainer(args)
    uses_unl = trainer.unl_sampler is not None
    images = args.batch_size * (1 + 2 * args.mu if uses_unl else 1)

    def augment():
        x = trainer.make_batch(trainer.step_num).x
        return trainer.normalize(x)

    for _ in range(args.warmup):
        augment() if args.augment_only else trainer.step()
    aug_ms = timed(augment, args.steps, device)
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "model": args.model,
        "image_shape": list(trainer.x_unl.shape[1:]),
        "batch_size": args.batch_size,
        "mu": args.mu,
        "algorithm": args.algorithm,
        "images_per_step": images,
        "speedups": trainer.speedups.describe(),
        "threads": torch.get_num_threads(),
        "data": args.dataset or "synthetic",
        "augment_only": args.augment_only,
    }
    if args.augment_only:
        step_ms = aug_ms
    else:
        step_ms = timed(trainer.step, args.steps, device)
        result["augment_ms"] = summarize(aug_ms)["median"]
        result["model_ms"] = round(statistics.median(step_ms) - result["augment_ms"], 3)
    result["ms_per_step"] = summarize(step_ms)
    result["images_per_second"] = round(images / (statistics.median(step_ms) / 1e3), 1)
    result["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def flat_params(model) -> torch.Tensor:
    """Every parameter in one float32 vector on the CPU: how far two paths' updates drift apart."""
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
