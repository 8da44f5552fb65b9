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
    {"commands", "outputs", "cpus"},  # the commands printed for the user; output files, written whole; CPU threads
    {"imaging"},  # image files and pixels: framing, decoding
    {"models", "augment", "data"},  # networks, augmentation, datasets: independent of each other
    {"algorithms"},  # the losses of one step
    {"config"},  # the training options (it validates names against the registries below)
    {"training"},  # the run, the step, the loop and their parts
    {"inference"},  # trained models: loading, framing, predict, evaluate, export
    {"serve"},  # HTTP only
    {"workflows"},  # what each command does on the torch side (the API imports it on first use)
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
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: the project imports its modules by their full name"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= project_imports_of(node)
    return found


def project_imports_of(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "fixmatch"}
    base = node.module or ""
    if base.split(".")[0] != "fixmatch":
        return set()
    return {f"{base}.{a.name}" if module_path(f"{base}.{a.name}") else base for a in node.names}


def module_path(module: str) -> Path | None:
    base = SRC / Path(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


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


def test_one_batch_is_followed_in_five_files():
    import sys

    from tiny_runs import tiny_config, tiny_trainer

    trainer, _ = tiny_trainer(tiny_config(device="cpu"))
    cfg = trainer.cfg
    assert (cfg.algorithm, cfg.strong_augment, cfg.unlabeled_batch_curriculum) == ("fixmatch", "ra", "off")
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


# A module imports the project's modules at its top, so the graph above is what runs. The exception:
# a function-local import that keeps a heavy package out of a module that is imported without it
# (`fixmatch --help`, the ONNX server and `import fixmatch` load no torch), with its reason beside it.
HEAVY = {"torch", "onnx", "onnxruntime", "cv2", "flask", "gunicorn", "matplotlib", "tensorboard"}


def split_imports(path: Path) -> tuple[set[str], set[str], list[tuple[int, str]]]:
    """(project modules imported when the module loads, third-party packages imported then,
    [(line, project module)] imported inside functions)."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    outside: set[str] = set()
    local: list[tuple[int, str]] = []
    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(fn) if n is not fn}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        found = project_imports_of(node)
        if id(node) in in_function:
            local += [(node.lineno, m) for m in sorted(found)]
        elif found:
            top |= found
        else:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            outside |= {n.split(".")[0] for n in names} | {n for n in names}
    return top, outside, local


def heavy_loads(module: str, seen: dict[str, set[str]] | None = None) -> set[str]:
    """The heavy packages `import module` loads: its own top-level imports, its packages'
    __init__ files, and those of every project module it imports at its top."""
    seen = {} if seen is None else seen
    if module in seen:
        return seen[module]
    seen[module] = set()
    path = module_path(module)
    assert path is not None, module
    top, outside, _ = split_imports(path)
    parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    loads = {n for n in outside if n in HEAVY or n.startswith("torch.utils.tensorboard")}
    for other in top | parents:
        loads |= heavy_loads(other, seen)
    seen[module] = loads
    return loads


def says_why(lines: list[str], lineno: int) -> bool:
    """`# deferred: why` on the import's line, or on a comment above its block of imports."""
    i = lineno - 1
    while i >= 0:
        text = lines[i].strip()
        if "# deferred:" in text:
            return True
        if text and not text.startswith(("import ", "from ", "#")):
            return False
        i -= 1
    return False


def test_a_function_local_import_defers_a_heavy_package_and_says_why():
    wrong = []
    for path in sorted((SRC / "fixmatch").rglob("*.py")):
        module, lines = module_name(path), path.read_text().splitlines()
        for lineno, imported in split_imports(path)[2]:
            gained = heavy_loads(imported) - heavy_loads(module)
            where = f"{path.relative_to(SRC)}:{lineno} imports {imported}"
            if not gained:
                wrong.append(f"{where} inside a function, deferring nothing heavy: import it at the top")
            elif not says_why(lines, lineno):
                wrong.append(f"{where} inside a function to defer {sorted(gained)}: say so (# deferred: why)")
    assert not wrong, "\n".join(wrong)


def test_the_heavy_package_list_matches_what_python_loads():
    """The static count above, checked against real imports for modules at both ends."""
    import subprocess
    import sys

    for module in ("fixmatch", "fixmatch.cli", "fixmatch.serve", "fixmatch.inference.predictor", "fixmatch.config"):
        code = f"import sys, {module}; print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(sorted(heavy_loads(module))), module
    assert "torch" in heavy_loads("fixmatch.training.engine")
