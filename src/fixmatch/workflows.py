"""What each command does on the torch side: train (a baseline beside it, or a resume), evaluate,
export, bench, the CTAugment statistics, the dataset list. fixmatch.api imports this module on first
use (`import fixmatch` and `fixmatch --help` load no torch); the CLI calls the API."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fixmatch.augment.ctaugment import read_stats, stats_text
from fixmatch.config import TrainConfig, from_dict
from fixmatch.cpus import thread_count
from fixmatch.data import DATASETS
from fixmatch.errors import UserError
from fixmatch.inference.evaluate import evaluate_on_dataset
from fixmatch.inference.loading import load_model, write_safetensors
from fixmatch.inference.model_files import ZOO
from fixmatch.inference.onnx_export import export_onnx
from fixmatch.inference.quantize import run_export_int8
from fixmatch.outputs import printable
from fixmatch.training import budget_choice, distributed
from fixmatch.training.bench import measure
from fixmatch.training.bench_options import BenchOptions
from fixmatch.training.checkpoint import load_checkpoint, save_atomic
from fixmatch.training.resolve import resolve
from fixmatch.training.run_folder import refuse_config_in_out
from fixmatch.training.train import compare
from fixmatch.training.train import resume as resume_run
from fixmatch.training.train import train as train_run


def train(options: dict, config: TrainConfig | None, resume, log, started: float | None, config_file=None) -> dict:
    if resume is not None:
        if config is not None:
            raise UserError("resume continues a run with its own saved config: give options as keywords, not a config")
        return resume_run(resume, options, log=log, started=started)
    refuse_config_in_out(config_file, options.get("out"))
    started = time.perf_counter() if started is None else started  # a time budget counts from here
    raw = from_dict(options, base=config)
    cfg = resolve(budget_choice.choose(raw, started, log))
    if cfg.baseline in ("none", cfg.algorithm):
        return train_run(cfg, log=log, started=started)
    baseline, main = compare(cfg, log=log, started=started)
    return {**main, "baseline": baseline}


def evaluate(source: str, dataset: str | None, data_dir, fer_test: str | None) -> dict:
    loaded = load_model(source)
    run_config = saved_run_config(source)
    dataset = dataset or run_config.get("dataset") or loaded.meta.get("dataset")
    if not dataset:
        raise UserError(
            "give --dataset (dataset= in Python): this model file does not say which dataset it was trained on"
        )
    same = run_config.get("dataset") == dataset
    data_dir = data_dir or (run_config.get("data_dir") if same else None)
    fer_test = fer_test or (run_config.get("fer_test") if same else None) or "private"
    return evaluate_on_dataset(loaded, dataset, data_dir, fer_test, run_config=run_config)


def saved_run_config(source: str) -> dict:
    """The training config saved in a checkpoint or run directory ({} for exported and zoo models)."""
    path = Path(source)
    if source in ZOO or path.suffix in (".safetensors", ".onnx"):
        return {}
    config = load_checkpoint(path)["meta"].get("config")
    return config if isinstance(config, dict) else {}


def export(checkpoint: str, onnx=None, safetensors=None, reseal=None, card=None, calibrate_on=None) -> list[str]:
    """Write what was asked; a line for the user per file written."""
    said = []
    if reseal:  # a checkpoint from before checksums, sealed as it is
        save_atomic(load_checkpoint(checkpoint, unsealed=True), reseal)
        said.append(f"wrote {printable(reseal)} (a copy of {printable(checkpoint)} with the checksum of its tensors)")
    if onnx or safetensors:
        loaded = load_model(checkpoint)
        extra = {"card": card} if card else None
        if safetensors:
            write_safetensors(loaded, safetensors, extra)
            said.append(f"wrote {printable(safetensors)}")
        if onnx:
            export_onnx(loaded, onnx, extra)
            said.append(f"wrote {printable(onnx)}")
            if calibrate_on:  # the int8 twin, calibrated and measured on the model's own dataset
                said.append(run_export_int8(loaded, onnx, calibrate_on, saved_run_config(checkpoint)))
    return said


def bench(options: BenchOptions) -> dict:
    return measure(options)


def cta_stats(run_dir: str) -> tuple[dict, str]:
    state = read_stats(run_dir)
    return state, stats_text(state)


def datasets() -> list[tuple[str, str, str]]:
    """(name, description, the files it needs) of every dataset."""
    return [(name, spec.description, spec.files) for name, spec in sorted(DATASETS.items())]


def set_threads(threads: int | str) -> None:
    torch.set_num_threads(thread_count(threads))


def shutdown(clean: bool) -> None:
    distributed.shutdown(clean)  # under torchrun: leave the process group explicitly
