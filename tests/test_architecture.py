"""The import rules of docs/architecture.md, checked on the source: layers only import down,
no cycle (imports inside functions count), no request globals or blueprints in cardbridge/."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cardbridge"

# Lowest first; a module may import its own package and any package in an earlier layer.
LAYERS: list[set[str]] = [
    {"after_commit"},
    {"metrics", "correlation"},
    {"config", "extensions", "csv_safe", "stripe_billing"},
    {"stripe_gateway"},
    {"models", "bulk"},
    {"web"},
    {"customers", "staff"},
    {"email"},
    {"links"},
    {"imports"},
    {"subscriptions"},
    {"payments"},
    {"campaigns"},
    {"closeout"},
    {"delivery"},
    {"retention"},
    {"cli"},
]
# The request side of the app (headers and CSP, log redaction): the one package that may read
# Flask's request globals.
REQUEST_SIDE = {"web"}
REQUEST_GLOBALS = {"request", "session", "g"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], bool, int]]:
    """(module, names, inside_a_function, line) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, [], in_function, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    module = ".".join(base + ([module] if module else []))
                found.append((module, [a.name for a in child.names], in_function, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _capability(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "cardbridge" and len(parts) > 1 else None


def _layer(capability: str) -> int:
    for at, layer in enumerate(LAYERS):
        if capability in layer:
            return at
    raise AssertionError(f"cardbridge.{capability} is in no layer of docs/architecture.md")


def test_every_package_has_a_layer():
    for child in PACKAGE.iterdir():
        if child.name.startswith("_") or child.name == "py.typed":
            continue
        _layer(child.stem)


def test_packages_only_import_downwards():
    wrong = []
    for path in _sources():
        mine = _capability(_module_name(path))
        if mine is None:
            continue
        for module, names, _, line in _imports(path):
            targets = [module]
            if module == "cardbridge":
                targets += [f"{module}.{n}" for n in names]
            for target in targets:
                theirs = _capability(target)
                if theirs is None or theirs == mine:
                    continue
                if _layer(theirs) >= _layer(mine):
                    where = f"{path.relative_to(ROOT)}:{line}"
                    wrong.append(f"{where} cardbridge.{mine} imports {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules_counting_function_level_imports():
    modules = {_module_name(p): p for p in _sources()}
    graph = defaultdict(set)
    for name, path in modules.items():
        for module, names, _, _ in _imports(path):
            for target in [module] + [f"{module}.{n}" for n in names]:
                if target in modules and target != name:
                    graph[name].add(target)
    # a package's __init__ re-exporting its own modules is not a cycle of behaviour
    seen, stack, cycles = set(), [], []

    def walk(node, on_path):
        seen.add(node)
        stack.append(node)
        on_path.add(node)
        for nxt in graph[node]:
            if nxt in on_path:
                if not (nxt in node or node.startswith(nxt + ".")):
                    cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                walk(nxt, on_path)
        on_path.discard(node)
        stack.pop()

    for node in list(modules):
        if node not in seen:
            walk(node, set())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_in_cardbridge_imports_blueprints_or_request_globals():
    wrong = []
    for path in _sources():
        request_side = _capability(_module_name(path)) in REQUEST_SIDE
        for module, names, _, line in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module.split(".")[0] == "blueprints":
                wrong.append(f"{where} imports {module}")
            if module == "flask" and REQUEST_GLOBALS & set(names) and not request_side:
                wrong.append(f"{where} imports flask's {sorted(REQUEST_GLOBALS & set(names))}")
    assert not wrong, "\n".join(wrong)


def test_no_function_level_import_of_cardbridge_outside_create_app():
    wrong = []
    files = _sources() + sorted((ROOT / "blueprints").rglob("*.py")) + [ROOT / "app.py"]
    for path in files:
        for module, _, in_function, line in _imports(path):
            if in_function and module.split(".")[0] in {"cardbridge", "blueprints"}:
                if path.name == "app.py":
                    continue
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} inside a function")
    assert not wrong, "\n".join(wrong)


def test_links_are_made_in_one_place():
    """One function issues links (links.service.issue_links, for one customer or a batch):
    no other module builds a Link row or inserts into the links table."""
    makers = []
    for path in _sources() + sorted((ROOT / "blueprints").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func, args = node.func, node.args
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            builds_row = name == "Link"
            inserts = name == "insert" and args and ast.unparse(args[0]) in {
                "Link", "Link.__table__", "_LINKS"}
            if builds_row or inserts:
                makers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert makers and all(m.startswith("cardbridge/links/service.py:") for m in makers), makers
