"""The package's layout, checked on the source so that it cannot decay.

The layers, top to bottom (each may import only what is below it, and itself):

=====================  ==============================================================================
public clients         ``device_client``, ``module_client``
``_provisioning``      DPS: the registration client and the identity provider a client is given
``_client``            what the clients share: argument checks, the client's lifetime
``_https``             file upload, module methods, the IoT Edge workload API (httpx)
``pnp``                Plug and Play conventions (public)
``_session``           one identity's session: supervisor, dispatch, inbound buffers, tokens
``transports``         one MQTT connection each, behind the ``Transport`` seam
``_auth``              credentials and the tokens they sign
``options``            the clients' options (public values)
``_outbox``            the durable outbox: one SQLite file, its disk thread, the per-identity queues
``message``            the message type (public value)
``protocol``           the sans-IO core: codec, topics, SAS, payloads
``exceptions``         the exception tree
=====================  ==============================================================================

Above them: ``emulator`` (it imports from the layers below what it shares with the clients: the
protocol core, credentials, value types), then the package front, the ``simulator``, ``testing``
and ``__main__`` (the public API and the emulator). Imports inside functions count: a cycle hidden in a function is
still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aioiothub

PACKAGE = Path(aioiothub.__file__).parent

#: Layer of each top-level module or package, lowest first.
LAYERS: dict[str, int] = {
    "exceptions": 0,
    "_version": 0,
    "protocol": 1,
    "message": 2,
    "_outbox": 3,
    "options": 4,
    "_auth": 5,
    "transports": 6,
    "_session": 7,
    "pnp": 8,
    "_https": 9,
    "_client": 10,
    "_provisioning": 11,
    "device_client": 12,
    "module_client": 12,
    "emulator": 13,
    "__init__": 14,
    "simulator": 15,
    "testing": 15,
    "__main__": 16,
}

#: Imports that cross the layers on purpose, each with its reason.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(["aioiothub", *parts])


def _imports(path: Path) -> set[str]:
    """Every ``aioiothub`` module ``path`` imports, at any depth (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("aioiothub"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("aioiothub"):
            assert node.module is not None
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if _is_module(candidate) else node.module)
    return names


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target == node or target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            # A package's __init__ re-exporting its own modules is not a cycle of modules.
            if len(component) > 1 and not _only_package_front(component):
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def _only_package_front(component: list[str]) -> bool:
    fronts = [name for name in component if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists()]
    return len(fronts) == 1 and all(name.startswith(fronts[0] + ".") for name in component if name != fronts[0])


def test_each_layer_imports_only_what_is_below_it() -> None:
    violations = []
    for module, targets in _graph().items():
        source = _top(module)
        for target in targets:
            destination = _top(target)
            if destination == source:
                continue
            if LAYERS[destination] >= LAYERS[source] and (source, destination) not in ALLOWED_UPWARD:
                violations.append(f"{module} -> {target}")
    assert violations == []


def test_every_top_level_module_has_a_layer_and_the_top_level_is_the_public_face() -> None:
    top = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir() if not path.name.startswith(".")}
    top -= {"py", "__pycache__"}
    assert {name for name in top if name.endswith(".typed")} <= {"py.typed"}
    names = {name for name in top if name != "py.typed"}
    assert names <= set(LAYERS), sorted(names - set(LAYERS))
    modules = [path for path in PACKAGE.glob("*.py")]
    assert len(modules) <= 14, sorted(path.name for path in modules)


def test_private_packages_say_their_job_and_what_they_may_import() -> None:
    for package in ("_auth", "_session", "_https", "_provisioning", "_client", "transports", "_outbox"):
        docstring = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert docstring, package
        assert "mport" in docstring, f"{package}'s docstring does not say what it may import"


def test_few_private_names_cross_modules() -> None:
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aioiothub"):
                crossings += [
                    f"{_module_name(path)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert len(crossings) <= 20, "\n".join(crossings)


def test_no_module_is_longer_than_500_lines() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {module: length for module, length in lengths.items() if length > 500} == {}


def test_every_public_name_reports_the_import_path_users_type() -> None:
    wrong = {
        name: getattr(getattr(aioiothub, name), "__module__", None)
        for name in aioiothub.__all__
        if not name.startswith("__") and name != "pnp"
    }
    assert {name: module for name, module in wrong.items() if module != "aioiothub"} == {}


def _project_bases() -> dict[str, list[str]]:
    """Each project class (by name) and the project classes it names as bases, from the source."""
    classes: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = [base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases]
                classes.setdefault(node.name, []).extend(names)
    return {name: [base for base in bases if base in classes] for name, bases in classes.items()}


def _is_exception(name: str, bases: dict[str, list[str]]) -> bool:
    return name.endswith(("Error", "Exception")) or any(_is_exception(base, bases) for base in bases[name])


def test_no_chain_of_three_project_classes_exceptions_aside() -> None:
    bases = _project_bases()

    def depth(name: str) -> int:
        return 1 + max((depth(base) for base in bases[name]), default=0)

    deep = {name: depth(name) for name in bases if not _is_exception(name, bases) and depth(name) > 2}
    assert deep == {}
