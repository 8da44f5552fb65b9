"""Each algorithm's own options, declared in its file as an `Options` dataclass of `opt(...)` fields,
and read here from the file's source *without importing it*: algorithm files import torch, while the
config, its YAML and `fixmatch train --help` are built from these options without loading torch.
tests/algorithms/test_registry.py checks that what is read here is what each file's dataclass holds.

An option two algorithms share (tau, lambda_u, an EMA momentum) is declared in each of their files,
identically: the help then lists every algorithm that reads it."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TYPES = {"bool": bool, "int": int, "float": float, "str": str, "None": type(None)}


def opt(default, help: str, *, within: str | None = None, fallback: Any = None):
    """An algorithm option: its default, its one description, the interval its value must lie in
    ("[0, 1)", "(0, inf)") and, for a default of None, the value it takes when the dataset sets none."""
    return field(default=default, metadata={"help": help, "within": within, "fallback": fallback})


@dataclass(frozen=True)
class OptionSpec:
    name: str
    type: Any  # float, bool, or a union such as bool | None
    default: Any
    help: str
    within: str | None
    fallback: Any
    owners: tuple[str, ...]  # the algorithms that read it

    def same_declaration(self, other: OptionSpec) -> bool:
        return (self.type, self.default, self.help, self.within, self.fallback) == (
            other.type,
            other.default,
            other.help,
            other.within,
            other.fallback,
        )

    def check(self, value) -> str | None:
        """Why `value` is refused (outside its interval, NaN, infinite), or None."""
        if self.within is None or value is None or isinstance(value, bool):
            return None
        low, high = (float(x) for x in self.within[1:-1].split(","))
        ok = (low < value if self.within[0] == "(" else low <= value) and (
            value < high if self.within[-1] == ")" else value <= high
        )
        if ok and math.isfinite(value):
            return None
        if math.isinf(high) and self.within[-1] == ")":  # [0, inf) or (0, inf): say it plainly
            return f"{self.name} must be {'>' if self.within[0] == '(' else '>='} {low:g}, got {value}"
        return f"{self.name} must lie in {self.within}, got {value}"


def registered_class(tree: ast.Module) -> str | None:
    """The name of the class decorated with @register in a module, if any."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list
        ):
            return node.name
    return None


def annotation_type(node: ast.expr):
    """`float`, `bool | None`, ...: the type an option's annotation names."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return annotation_type(node.left) | annotation_type(node.right)
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    return TYPES[node.id]  # type: ignore[attr-defined]


def declared_options(tree: ast.Module, owner: str) -> list[OptionSpec]:
    """The fields of the module's `Options` dataclass: `name: type = opt(default, help, ...)`."""
    specs = []
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name == "Options"):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.value, ast.Call):
                call = item.value
                keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
                specs.append(
                    OptionSpec(
                        name=item.target.id,  # type: ignore[union-attr]
                        type=annotation_type(item.annotation),
                        default=ast.literal_eval(call.args[0]),
                        help=ast.literal_eval(call.args[1]),
                        within=keywords.get("within"),
                        fallback=keywords.get("fallback"),
                        owners=(owner,),
                    )
                )
    return specs


def read_algorithms(folder: Path = HERE) -> tuple[dict[str, str], dict[str, OptionSpec]]:
    """({algorithm name: its module}, {option name: its spec}), from the files of the algorithms
    package: an algorithm is a class decorated with @register, named after it (FlexMatch -> flexmatch)."""
    names: dict[str, str] = {}
    options: dict[str, OptionSpec] = {}
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        cls = registered_class(tree)
        if cls is None:
            continue
        names[cls.lower()] = path.stem
        for spec in declared_options(tree, cls.lower()):
            seen = options.get(spec.name)
            if seen is not None and not seen.same_declaration(spec):
                raise RuntimeError(f"option {spec.name!r} is declared differently in {seen.owners} and {path.name}")
            owners = (seen.owners if seen else ()) + spec.owners
            options[spec.name] = OptionSpec(**{**spec.__dict__, "owners": owners})
    return names, options


ALGORITHM_MODULES, ALGORITHM_OPTIONS = read_algorithms()
ALGORITHM_NAMES = tuple(ALGORITHM_MODULES)
