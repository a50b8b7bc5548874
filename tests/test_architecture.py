"""The package's shape: no import cycle among its modules, and no private name imported from another module."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pyterrier_reasonrank": ROOT / "pyterrier_reasonrank", "pyterrier_reasonrank.training": ROOT / "training"}


def modules() -> dict[str, Path]:
    """Every module of the package (the training folder is installed as its subpackage), by dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if "training" in parts and package == "pyterrier_reasonrank":  # a link to the training folder
                continue
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports when it is imported: at module level, not for type checking."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            if isinstance(child, ast.Import):
                imported |= {alias.name for alias in child.names if alias.name in known}
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - child.level + 1]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    if f"{source}.{alias.name}" in known:  # a submodule
                        imported.add(f"{source}.{alias.name}")
                    elif source in known:
                        imported.add(source)
    return imported - {name}


def test_no_module_imports_itself_through_others():
    found = modules()
    graph = {name: module_level_imports(path, name, set(found)) for name, path in found.items()}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)
    # the walk sees the imports it should
    assert "pyterrier_reasonrank.store" in graph["pyterrier_reasonrank.judging"] or \
        "pyterrier_reasonrank.identity" in graph["pyterrier_reasonrank.judging"]
    assert "pyterrier_reasonrank.evaluation" in graph["pyterrier_reasonrank.calibrating"]


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for folder in ("pyterrier_reasonrank", "training", "tests", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if "training" in path.relative_to(ROOT).parts[1:] and folder == "pyterrier_reasonrank":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                    offenders += [f"{path.relative_to(ROOT)}: {node.module}.{alias.name}" for alias in node.names
                                  if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []
