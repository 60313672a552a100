"""The layers of DESIGN.md §4, checked on the source: imports point down only, no import
cycle between modules (lazy imports inside functions count too), `cloudmirror` never imports
`api`, cloud SDKs only in stores/, events/ and local/, SQL only in ledger/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# top to bottom; a module may import its own layer and the layers below it
LAYERS = [
    ["cloudmirror.cli"],
    ["api"],
    ["cloudmirror.dr"],
    ["cloudmirror.services"],
    ["cloudmirror.replication", "cloudmirror.reports"],
    ["cloudmirror.ledger"],
    ["cloudmirror.local"],
    ["cloudmirror.events"],
    ["cloudmirror.stores"],
    ["cloudmirror.config", "cloudmirror.settings", "cloudmirror.policy", "cloudmirror.redact", "cloudmirror.location",
     "cloudmirror.metrics", "cloudmirror.paging", "cloudmirror.errors", "cloudmirror"],
]
SDKS = ("boto3", "aioboto3", "botocore", "aiobotocore", "google.cloud", "google.api_core", "google.auth",
        "google.oauth2", "google_crc32c", "azure")
SDK_HOMES = ("cloudmirror.stores", "cloudmirror.events", "cloudmirror.local")
SQL = ("sqlalchemy", "alembic", "psycopg", "sqlite3")
SQL_HOMES = ("cloudmirror.ledger",)


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("cloudmirror", "api"):
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" in path.parts:  # alembic's scripts are the ledger's, run by alembic
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports anywhere in its file (top level or inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from pkg import mod` runs pkg/__init__ too: an edge to both (a package whose
            # __init__ imports the module that imports it back is a cycle)
            found.update({f"{base}.{a.name}" for a in node.names} & set(MODULES))
            found.add(base)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _within(name: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(name: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if _within(name, [p]) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{name} belongs to no layer: add it to LAYERS"
    return best[0]


def _internal(imported: str) -> str | None:
    """The project module an import names (a name imported from a module maps to it)."""
    while imported and imported not in MODULES:
        imported = imported.rpartition(".")[0]
    return imported or None


def test_the_walk_sees_the_project():
    assert {"cloudmirror.cli.serve", "cloudmirror.services.runtime", "api.app",
            "cloudmirror.stores.base"} <= set(MODULES)
    assert "cloudmirror.services.runtime" in {_internal(i) for i in IMPORTS["cloudmirror.cli.serve"]}


def test_no_import_cycles():
    graph = {m: {t for i in imps if (t := _internal(i)) and t != m} for m, imps in IMPORTS.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_imports_point_down():
    upward = []
    for m, imps in IMPORTS.items():
        for i in imps:
            t = _internal(i)
            if t and t != m and _layer(t) < _layer(m):
                upward.append(f"{m} -> {t}")
    assert upward == [], "imports pointing up: " + ", ".join(sorted(upward))


def test_cloudmirror_never_imports_api():
    offenders = sorted(f"{m} -> {i}" for m, imps in IMPORTS.items() if _within(m, ["cloudmirror"])
                       for i in imps if _within(i, ["api"]))
    assert offenders == [], offenders


@pytest.mark.parametrize(("what", "libraries", "homes"), [("cloud SDKs", SDKS, SDK_HOMES), ("SQL", SQL, SQL_HOMES)])
def test_libraries_stay_in_their_layer(what, libraries, homes):
    offenders = sorted(f"{m} -> {i}" for m, imps in IMPORTS.items() if not _within(m, homes)
                       for i in imps if _within(i, libraries))
    assert offenders == [], f"{what} imported outside {', '.join(homes)}: {offenders}"
