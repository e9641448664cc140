"""The house's import rules (DESIGN.md, Layout), read from the source with ``ast``.

Every import counts: at module level, inside functions, under ``if``; ``import x``, ``from x
import y`` and relative imports (resolved against the importing module). Three rules:

- rooms: each room imports only the rooms below it (``ALLOWED``);
- no circle between project modules (module granularity: ``from pkg import name`` is an edge
  to ``pkg.name`` when that is a module, else to ``pkg`` itself, so a package ``__init__``
  importing its submodules counts);
- no private name (``_x``, not ``__dunder__``) taken from another project module, either
  ``from m import _x`` or ``m._x`` on a name bound to a project module.

Each failure names the file, the line and the rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP_PACKAGES = ("spendwatch", "collectors", "alerts", "reports", "app")

# room -> the rooms it may import (its own room always included)
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "collectors": {"collectors", "core"},
    "simulator": {"simulator", "core"},
    "alerts": {"alerts", "core"},
    "reports": {"reports", "core", "alerts"},
    "app": {"app", "core", "alerts", "reports"},
    "cli": {"cli", "core", "collectors", "simulator", "alerts", "reports", "app"},
}
# ``python -m spendwatch`` is the shell's second entry point (nothing imports it): it belongs
# to the shell, not to the core, although it lives in spendwatch/.
ROOM_OF_MODULE = {"spendwatch.__main__": "cli"}


def room_of(module: str) -> str:
    if module in ROOM_OF_MODULE:
        return ROOM_OF_MODULE[module]
    parts = module.split(".")
    if parts[0] == "spendwatch":
        return "cli" if parts[1:2] == ["cli"] else "core"
    if parts[0] == "collectors":
        return "simulator" if parts[1:2] == ["simulator"] else "collectors"
    return parts[0]


@dataclass(frozen=True)
class Import:
    source: str      # the importing module
    file: str        # its path, relative to the tree's root
    line: int
    target: str      # the imported project module
    text: str        # how it was written, for messages


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.detail}"


def project_modules(root: Path, packages: tuple[str, ...] = TOP_PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the project's packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _base_of_relative(module: str, path: Path, level: int) -> str:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    return ".".join(parts[:len(parts) - (level - 1)]) if level > 1 else package


def _dotted(node: ast.expr) -> list[str] | None:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(names)]
    return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def read_imports(root: Path, packages: tuple[str, ...] = TOP_PACKAGES
                 ) -> tuple[list[Import], list[Violation]]:
    """Every import of a project module, and the private names taken across modules."""
    modules = project_modules(root, packages)
    imports: list[Import] = []
    private: list[Violation] = []

    def owner(dotted: str) -> str | None:
        """The longest project module that ``dotted`` starts with."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in modules:
                return ".".join(parts[:n])
        return None

    for module, path in modules.items():
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        bound: dict[str, str] = {}  # a local name -> the project module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = owner(alias.name)
                    if target is None:
                        continue
                    imports.append(Import(module, rel, node.lineno, target,
                                          f"import {alias.name}"))
                    if alias.asname:
                        bound[alias.asname] = target
                    else:  # ``import a.b`` binds ``a``; a.b.c... is resolved by owner()
                        head = alias.name.split(".")[0]
                        bound.setdefault(head, head)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _base_of_relative(module, path, node.level)
                    source = ".".join(p for p in (base, node.module or "") if p)
                else:
                    source = node.module or ""
                if owner(source) is None and not any(f"{source}.{a.name}" in modules
                                                     for a in node.names):
                    continue
                written = "." * node.level + (node.module or "")
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    target = submodule if submodule in modules else owner(source)
                    if target is None:
                        continue
                    imports.append(Import(module, rel, node.lineno, target,
                                          f"from {written} import {alias.name}"))
                    if submodule in modules:
                        bound[alias.asname or alias.name] = submodule
                    elif is_private(alias.name) and target != module:
                        private.append(Violation(
                            rel, node.lineno, "private name from another module",
                            f"`from {written} import {alias.name}` takes {target}'s private "
                            f"{alias.name}; make it public in {target}"))
        for node in ast.walk(tree):  # m._x on a name bound to a project module
            if not isinstance(node, ast.Attribute) or not is_private(node.attr):
                continue
            chain = _dotted(node.value)
            if not chain or chain[0] not in bound:
                continue
            dotted = ".".join([bound[chain[0]], *chain[1:]])
            if dotted in modules and dotted != module:
                private.append(Violation(
                    rel, node.lineno, "private name from another module",
                    f"`{'.'.join(chain)}.{node.attr}` uses {dotted}'s private {node.attr}; "
                    f"make it public in {dotted}"))
    return imports, private


def room_violations(imports: list[Import]) -> list[Violation]:
    out = []
    for imp in imports:
        src, dst = room_of(imp.source), room_of(imp.target)
        if dst not in ALLOWED[src]:
            out.append(Violation(imp.file, imp.line, f"room {src} may not import room {dst}",
                                 f"`{imp.text}` ({imp.source} -> {imp.target}); {src} may "
                                 f"import only {', '.join(sorted(ALLOWED[src]))}"))
    return out


def circles(imports: list[Import]) -> list[Violation]:
    """One violation per import circle (a strongly connected group of modules)."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.source != imp.target:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    out = []
    for group in groups:
        members = set(group)
        # a shortest way back to the first module, inside the group: one readable circle
        first = group[0]
        paths = {first: [first]}
        frontier = [first]
        cycle: list[str] | None = None
        while frontier and cycle is None:
            nxt = []
            for node in frontier:
                for child in sorted(edges.get(node, {})):
                    if child == first:
                        cycle = paths[node] + [first]
                        break
                    if child in members and child not in paths:
                        paths[child] = paths[node] + [child]
                        nxt.append(child)
                if cycle:
                    break
            frontier = nxt
        assert cycle is not None
        steps = [edges[a][b] for a, b in zip(cycle, cycle[1:])]
        where = "; ".join(f"{s.file}:{s.line} `{s.text}`" for s in steps)
        more = (f" (the circle's group: {', '.join(group)})" if len(group) > len(cycle) - 1
                else "")
        out.append(Violation(steps[0].file, steps[0].line, "import circle",
                             " -> ".join(cycle) + f": {where}{more}"))
    return out


def check(root: Path, packages: tuple[str, ...] = TOP_PACKAGES) -> list[Violation]:
    imports, private = read_imports(root, packages)
    return room_violations(imports) + circles(imports) + private


def _report(violations: list[Violation]) -> str:
    return f"{len(violations)} violation(s):\n" + "\n".join(map(str, violations))


# --- the project --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project() -> tuple[list[Import], list[Violation]]:
    return read_imports(REPO)


def test_every_room_imports_only_the_rooms_below_it(project) -> None:
    violations = room_violations(project[0])
    assert not violations, _report(violations)


def test_there_is_no_import_circle(project) -> None:
    violations = circles(project[0])
    assert not violations, _report(violations)


def test_no_private_name_is_taken_from_another_module(project) -> None:
    assert not project[1], _report(project[1])


def test_the_checker_sees_the_whole_project(project) -> None:
    modules = project_modules(REPO)
    for expected in ("spendwatch.cli.main", "spendwatch.warehouse.spend", "collectors.sync",
                     "collectors.simulator.server", "alerts.rules", "reports.weekly",
                     "app.pages.spend"):
        assert expected in modules
    sources = {imp.source for imp in project[0]}
    assert {"spendwatch.cli.main", "app.pages.spend", "collectors.sync"} <= sources


# --- the checker itself, on a made-up tree ------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_catches_each_kind_of_violation(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "spendwatch/__init__.py": "",
        "spendwatch/__main__.py": "from spendwatch.cli import main\n",  # allowed: the shell
        "spendwatch/storage.py": "def _helper():\n    pass\n_LIMIT = 3\n__all__ = []\n",
        "spendwatch/digest.py": ("import json\n"
                                 "def later():\n"
                                 "    from alerts import engine\n"),      # core -> alerts
        "spendwatch/cli/__init__.py": "from spendwatch.cli.main import main\n",
        "spendwatch/cli/main.py": "from app import page\nimport reports.weekly\n"
                                  "def main(): pass\n",                   # cli -> anything
        "spendwatch/dashboard.py": "import app.page as page\n",         # core -> app
        "collectors/__init__.py": "",
        "collectors/sync.py": ("from spendwatch import storage\n"
                               "from spendwatch.storage import __all__\n"
                               "x = storage._LIMIT\n"),                  # m._x
        "collectors/simulator/__init__.py": "",
        "collectors/simulator/server.py": "from collectors import sync\n",  # sim -> collectors
        "alerts/__init__.py": "",
        "alerts/engine.py": "from . import slack\n",                     # relative, circle
        "alerts/slack.py": ("def words():\n"
                            "    from .text import line\n"),             # inside a function
        "alerts/text.py": ("from alerts.engine import send\n"
                           "from spendwatch.storage import _helper\n"),  # private import
        "alerts/channels.py": "from reports import weekly\n",           # alerts -> reports
        "reports/__init__.py": "",
        "reports/weekly.py": ("from alerts.engine import send\nimport spendwatch.storage\n"
                              "y = spendwatch.storage._helper\n"),       # a.b._x
        "app/__init__.py": "",
        "app/page.py": "from reports.weekly import y\nfrom spendwatch.cli import main\n",
    })
    found = sorted(map(str, check(tmp_path)))
    assert found == sorted([
        "spendwatch/digest.py:3: room core may not import room alerts: `from alerts import "
        "engine` (spendwatch.digest -> alerts.engine); core may import only core",
        "spendwatch/dashboard.py:1: room core may not import room app: `import app.page` "
        "(spendwatch.dashboard -> app.page); core may import only core",
        "collectors/simulator/server.py:1: room simulator may not import room collectors: "
        "`from collectors import sync` (collectors.simulator.server -> collectors.sync); "
        "simulator may import only core, simulator",
        "alerts/channels.py:1: room alerts may not import room reports: `from reports "
        "import weekly` (alerts.channels -> reports.weekly); alerts may import only alerts, core",
        "app/page.py:2: room app may not import room cli: `from spendwatch.cli import main` "
        "(app.page -> spendwatch.cli.main); app may import only alerts, app, core, reports",
        "alerts/engine.py:1: import circle: alerts.engine -> alerts.slack -> alerts.text -> "
        "alerts.engine: alerts/engine.py:1 `from . import slack`; alerts/slack.py:2 `from .text "
        "import line`; alerts/text.py:1 `from alerts.engine import send`",
        "app/page.py:2: import circle: app.page -> spendwatch.cli.main -> app.page: "
        "app/page.py:2 `from spendwatch.cli import main`; spendwatch/cli/main.py:1 `from app "
        "import page`",
        "alerts/text.py:2: private name from another module: `from spendwatch.storage import "
        "_helper` takes spendwatch.storage's private _helper; make it public in "
        "spendwatch.storage",
        "collectors/sync.py:3: private name from another module: `storage._LIMIT` uses "
        "spendwatch.storage's private _LIMIT; make it public in spendwatch.storage",
        "reports/weekly.py:3: private name from another module: `spendwatch.storage._helper` "
        "uses spendwatch.storage's private _helper; make it public in spendwatch.storage",
    ]), "\n".join(found)


def test_a_package_init_importing_its_submodule_closes_a_circle(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "alerts/__init__.py": "from alerts.engine import run\n",
        "alerts/engine.py": "import alerts\n",
    })
    (found,) = check(tmp_path, packages=("alerts",))
    assert str(found) == ("alerts/__init__.py:1: import circle: alerts -> alerts.engine -> "
                          "alerts: alerts/__init__.py:1 `from alerts.engine import run`; "
                          "alerts/engine.py:1 `import alerts`")
