"""The package layout is the architecture: each module imports only from its own package or from the
packages below it, and no module reaches itself through its imports (no circle). Every import of the
project's own modules counts: top-level, function-local (deferred on purpose) and type-only."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# Lowest first. A unit is a top-level module or package of fixmatch.
LAYERS = [
    {"errors"},  # the one error users see
    {"commands", "outputs"},  # the commands printed for the user; output files, written whole
    {"imaging"},  # image files and pixels: framing, decoding
    {"models", "augment", "data"},  # networks, augmentation, datasets: independent of each other
    {"algorithms"},  # the losses of one step
    {"config"},  # the training options (it validates names against the registries below)
    {"training"},  # the run, the step, the loop and their parts
    {"inference"},  # trained models: loading, framing, predict, evaluate, export
    {"serve"},  # HTTP only
    {"api"},  # the Python API
    {"cli"},  # the command line (a thin layer on the API where they overlap)
    {"__main__", "__init__"},  # `python -m fixmatch`, and the package's top-level names
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Every fixmatch module this file imports (a `from package import name` counts the submodule
    when `name` is one)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fixmatch"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: the project imports its modules by their full name"
            base = node.module or ""
            if base.split(".")[0] != "fixmatch":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(
                    sub
                    if (SRC / Path(*sub.split("."))).with_suffix(".py").exists()
                    or (SRC / Path(*sub.split(".")) / "__init__.py").exists()
                    else base
                )
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): project_imports(p) for p in sorted((SRC / "fixmatch").rglob("*.py"))}


def test_every_unit_has_a_layer():
    assert {unit(m) for m in graph()} <= set(LAYER), {unit(m) for m in graph()} - set(LAYER)


def test_imports_point_down_or_stay_in_their_package():
    upward = []
    for module, imports in graph().items():
        for imported in imports:
            if unit(imported) != unit(module) and LAYER[unit(imported)] >= LAYER[unit(module)]:
                upward.append(f"{module} -> {imported}")
    assert not upward, "\n".join(sorted(upward))


def test_no_module_reaches_itself():
    g = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                circles.append(" -> ".join(path[path.index(n) :] + [n]) if n in path else f"{m} -> {n}")
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)


# The walk of one batch: the project's code a newcomer reads to follow a default step (FixMatch,
# RandAugment, one process) from the sampler's indices to the loss. The network's forward (models/)
# is the model, not the walk; the speed paths (augment_graph, augment_stream) are wrappers installed
# once in Trainer.__init__ and are off here, as on every CPU.
WALK_FILES = {
    "training/engine.py": "the trainer: draw(), augment_indices(), the forward and loss",
    "augment/weak.py": "the weak view",
    "augment/randaugment.py": "the strong view",
    "augment/kernels.py": "the PIL-exact ops RandAugment applies",
    "algorithms/fixmatch.py": "the loss",
}
WALK_MAX_LINES = 600  # lines of the functions that run


def test_one_batch_is_followed_in_five_files(tmp_path):
    import sys

    from tiny_runs import tiny_config

    from fixmatch.config import resolve
    from fixmatch.data import load_data
    from fixmatch.training.devices import pick_device
    from fixmatch.training.train import make_trainer, pick_labels

    cfg = resolve(tiny_config(tmp_path))
    assert (cfg.algorithm, cfg.strong_augment, cfg.unlabeled_batch_curriculum) == ("fixmatch", "ra", "off")
    data = load_data(cfg)
    trainer = make_trainer(cfg, data, pick_labels(cfg, data), pick_device("cpu"))
    package = SRC / "fixmatch"
    run: dict = {}  # code object -> the file it is in, relative to the package

    def record(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        if event == "call" and path.is_relative_to(package) and path.parts[len(package.parts)] != "models":
            run[frame.f_code] = path.relative_to(package).as_posix()

    sys.setprofile(record)
    try:
        batch = trainer.make_batch(0)
        trainer.forward_loss(batch.x, batch.y_l, batch.idx_u)
    finally:
        sys.setprofile(None)
    assert set(run.values()) == set(WALK_FILES), sorted(set(run.values()))
    lines = sum(max(n for *_, n in code.co_lines() if n) - code.co_firstlineno + 1 for code in run)
    assert lines <= WALK_MAX_LINES, lines
