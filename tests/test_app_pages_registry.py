"""The page registry: one module per page, one list, no import cycle, every control and figure in its layout."""

from __future__ import annotations

import ast
from pathlib import Path

from app.components import graph_id
from app.pages import PAGES, page
from app.server import create_app

APP = Path(__file__).resolve().parents[1] / "app"


def ids_in(component: object) -> set[str]:
    """Every string id in a Dash component tree."""
    found: set[str] = set()
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
            continue
        if isinstance(getattr(node, "id", None), str):
            found.add(node.id)
        children = getattr(node, "children", None)
        if children is not None:
            stack.append(children)
    return found


def module_imports(path: Path) -> set[str]:
    """The ``app`` modules ``path`` imports, at module level or inside functions (relative imports resolved)."""
    package = ".".join(path.relative_to(APP.parent).with_suffix("").parts)
    package = package.removesuffix(".__init__") if path.name == "__init__.py" else package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("app"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("app"))
    return found


def test_pages_are_one_list_with_unique_names_and_figures():
    names = [p.name for p in PAGES]
    assert names == ["runs", "gradients", "teacher", "robustness", "training", "attribution", "tables"]
    figures = [f.name for p in PAGES for f in p.figures]
    assert len(figures) == len(set(figures))
    assert page("teacher").figure("teacher").name == "teacher"


def test_every_control_and_figure_is_in_its_pages_layout():
    for p in PAGES:
        ids = ids_in(p.layout())
        assert {c.id for c in p.controls.values()} <= ids, p.name
        assert {graph_id(f.name) for f in p.figures} <= ids, p.name


def test_every_page_is_a_tab_and_the_app_has_one_download_callback(tmp_path):
    app = create_app(tmp_path)
    client = app.server.test_client()
    layout = client.get("/_dash-layout").get_json()
    assert [p.name for p in PAGES][0] in str(layout)
    downloads = [d for d in client.get("/_dash-dependencies").get_json() if "download.data" in d["output"]]
    assert len(downloads) == 1


def test_no_import_cycle_among_the_app_modules():
    modules = {}
    for path in APP.rglob("*.py"):
        name = ".".join(path.relative_to(APP.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in module_imports(path) if m in modules and m != name} for name, path in modules.items()}
    # app.pages.__init__ gathers the page modules; a page module importing the package would be a cycle.
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name):], name])
        if name in done:
            return
        visiting.append(name)
        for other in graph[name]:
            visit(other)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)
    assert "app.pages.gradients" in graph["app.pages"]
