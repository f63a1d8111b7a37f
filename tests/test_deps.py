"""dvc.yaml deps are the code each stage runs, and the package has no import cycles.

Imports are read from the source (ast), including imports inside functions (they run when the function does) and
excluding `if TYPE_CHECKING:` blocks (they never run). A stage's deps are folders it owns or single modules: every
project file its command imports (transitively) must lie in one of them, and each declared code dep must hold at
least one file the command imports (no stale entries). Every package ``__init__.py`` is a docstring only, so importing
a module runs no other code of ours than what it imports itself (checked below). Modules a registry loads by name
(sources, compilers, runtimes) lie in the registry's own folder, which the stages that load them declare whole.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGES = ("whisper_npu", "stages")


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
    package = package.removesuffix(".__init__") if file.name == "__init__.py" else package.rsplit(".", 1)[0]
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
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module" and node.args
              and isinstance(node.args[0], ast.JoinedStr) and isinstance(node.args[0].values[0], ast.Constant)):
            # a registry's loader, import_module(f"whisper_npu.<folder>.{name}"): any module of that folder
            prefix = str(node.args[0].values[0].value)
            folder = ROOT.joinpath(*prefix.rstrip(".").split("."))
            names.update(".".join(f.relative_to(ROOT).with_suffix("").parts) for f in folder.rglob("*.py"))
    return names


def direct_files(path: str) -> set[str]:
    """Project files one file imports directly (a sub-module import also runs its packages' __init__.py)."""
    out = set()
    for name in imported_modules(path):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]))
            if f is not None and f != path:
                out.add(f)
    return out


def closure(entry: str) -> set[str]:
    """Project files run by ``python -m <entry>``: the module, what it imports, and the packages on the way."""
    first = {f for f in (module_file(".".join(entry.split(".")[:i])) for i in range(1, len(entry.split(".")) + 1))
             if f is not None}
    todo, seen = list(first), set(first)
    while todo:
        for f in direct_files(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def dvc_vars() -> dict[str, str]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return {k: v for entry in spec.get("vars", []) if isinstance(entry, dict) for k, v in entry.items()}


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage name, module run by its cmd, its code deps: .py files and folders under our packages)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    subst = dvc_vars()
    out = []
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        cmd = body["cmd"].split()
        module = cmd[cmd.index("-m") + 1]
        deps = [re.sub(r"\$\{(\w+)\}", lambda m: subst.get(m.group(1), m.group(0)), d) for d in body.get("deps", [])]
        code = [d for d in deps if d.endswith(".py") or d.split("/")[0] in PACKAGES]
        out.append((name, module, code))
    return out


def covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


def is_trivial(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return all(isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"] for n in body)


@pytest.mark.parametrize("name,module,deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_cover_exactly_what_it_runs(name: str, module: str, deps: list[str]) -> None:
    files = {f for f in closure(module) if not f.endswith("__init__.py")}
    missing = sorted(f for f in files if not covered(f, deps))
    stale = sorted(d for d in deps if not any(covered(f, [d]) for f in files))
    assert not missing and not stale, f"{name}: dvc.yaml deps miss {missing}; list {stale}, which it does not run"
    for d in deps:
        assert (ROOT / d).exists(), f"{name}: dependency {d} does not exist"


def test_every_package_init_is_a_docstring():
    inits = sorted(f for p in PACKAGES for f in (ROOT / p).rglob("__init__.py"))
    assert inits
    loud = [p.relative_to(ROOT).as_posix() for p in inits if not is_trivial(p)]
    assert not loud, f"{loud} run code: move it into a module, so that importing a sibling does not run it"


def _graph() -> dict[str, set[str]]:
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "whisper_npu").rglob("*.py"))
    return {f: {g for g in direct_files(f) if g.startswith("whisper_npu/") and not g.endswith("__init__.py")}
            for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (file -> files it imports), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_in_the_package():
    """Counting imports inside functions: a cycle hidden behind a function-level import is still a cycle."""
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_closure_follows_function_level_imports():
    # the compile stage imports the compiler registry, whose get() imports nothing at module level; the
    # onnxruntime compiler imports its export module at module level
    assert "whisper_npu/compilers/onnxruntime/export.py" in closure("whisper_npu.compilers.onnxruntime.build")
    # transcribe_fp32 imports torch_ref only inside main(): still in its closure
    assert "whisper_npu/runtimes/torch_ref.py" in closure("stages.transcribe_fp32")


def test_runtimes_and_compilers_stay_apart():
    """Editing a runtime never reruns a compile, editing a compiler never reruns a transcription."""
    spec = {name: deps for name, _, deps in stages()}
    assert not [d for d in spec["compile"] if "runtimes" in d]
    for stage in ("transcribe_fp32", "transcribe_compiled", "score"):
        assert not [d for d in spec[stage] if "compilers" in d], stage
    assert not [d for d in spec["transcribe_fp32"] if d.endswith("/runtimes") or "runtimes/registry" in d]


def test_every_user_of_the_real_english_run_is_scheduled_with_it() -> None:
    """conftest.REAL_ENGLISH_FILES keeps the shared run's readers on one pytest-xdist worker (`make test`)."""
    from conftest import REAL_ENGLISH_FILES

    users = {f.name for f in Path(__file__).parent.glob("test_*.py")
             if f.name != Path(__file__).name and "real_english_run" in f.read_text()}
    assert users == set(REAL_ENGLISH_FILES)
