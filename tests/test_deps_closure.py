"""dvc.yaml deps = the project source files each stage imports, transitively: no more, no fewer.

Imports are read from the source (ast), including imports inside functions (they run when the function
does) and excluding `if TYPE_CHECKING:` blocks (they never run). Importing a sub-module runs its package's
``__init__.py``; the two top-level ``__init__.py`` files (a docstring and ``__version__``, which no stage
writes into an output) are left out of deps on purpose, and this test checks that they stay that trivial.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

PACKAGES = ("whisper_npu", "stages")
TRIVIAL_INITS = {"whisper_npu/__init__.py", "stages/__init__.py"}


def module_file(name: str) -> str | None:
    """Project-relative file of a dotted module name, or None when it is not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


def _runtime_nodes(tree: ast.AST):
    """All nodes except the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported_modules(path: str) -> set[str]:
    """Dotted names of the modules one file imports (``from a import b`` may import module ``a.b``)."""
    file = ROOT / path
    package = ".".join(Path(path).with_suffix("").parts)
    if file.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    else:
        package = package.removesuffix(".__init__")
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def closure(entry: str) -> set[str]:
    """Project files run by ``python -m <entry>``: the module, what it imports, and the packages on the way."""
    todo, seen = [entry], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ first
            f = module_file(".".join(parts[:i]))
            if f is None or f in seen:
                continue
            seen.add(f)
            todo.extend(imported_modules(f))
    return seen


def stages() -> list[tuple[str, str, set[str]]]:
    """(stage name, module run by its cmd, its .py deps) for every stage in dvc.yaml."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = []
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        cmd = body["cmd"].split()
        module = cmd[cmd.index("-m") + 1]
        deps = {d for d in body.get("deps", []) if d.endswith(".py")}
        out.append((name, module, deps))
    return out


@pytest.mark.parametrize("name,module,deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_are_its_imports(name: str, module: str, deps: set[str]) -> None:
    files = closure(module) - TRIVIAL_INITS
    missing, extra = sorted(files - deps), sorted(deps - files)
    assert not missing and not extra, f"{name}: dvc.yaml deps miss {missing}, list {extra} that it does not import"


def test_closure_sees_local_and_package_imports() -> None:
    # run_stage's `from whisper_npu.params import ParamsError` sits inside the function
    assert "whisper_npu/params.py" in closure("whisper_npu.io")
    # a backend module brings its package's __init__.py
    assert "whisper_npu/backends/__init__.py" in closure("whisper_npu.backends.torch_ref")


@pytest.mark.parametrize("path", sorted(TRIVIAL_INITS))
def test_top_level_inits_stay_trivial(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert all(isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"] for n in body), (
        f"{path} now runs code: add it to the deps of every stage in dvc.yaml and drop it from TRIVIAL_INITS")
