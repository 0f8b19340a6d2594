"""The library is a stack: every module imports only modules of its own layer or below (the
README's library table draws the same layers), no two modules import each other, however
indirectly and lazily (within a layer too), and no module grows past ~300 lines."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [                                  # lowest first; the first part of the dotted module name
    ("foundations", {"seeds", "registry", "files", "stats", "progress", "bits", "runlock", "hints", "pixels", "preemption",
                     "divergence"}),
    ("distributions", {"priors"}),
    ("data", {"toy", "data", "pipeline", "streaming", "images"}),
    ("SDE", {"sde", "timesteps"}),
    ("score network", {"networks"}),
    ("training infrastructure", {"config", "resume", "checkpoints", "distribute", "optim", "ode", "flow", "pretrained",
                                 "views"}),
    ("losses and prior fitting", {"losses", "training", "prior_fit"}),
    ("samplers", {"samplers", "few_step"}),
    ("likelihood and ELBO", {"likelihood", "elbo", "quality", "extractors", "calibration"}),
    ("run-level application", {"app"}),
    ("study", {"study"}),
]
LAYER = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
MAX_LINES = 300


def library_modules():
    return sorted(p for p in (ROOT / "shortdiff_tf").rglob("*.py") if p.name != "__init__.py" or p.stat().st_size)


def layer_of(path: Path) -> int:
    rel = path.relative_to(ROOT / "shortdiff_tf").with_suffix("")
    return LAYER[rel.parts[0]]


def imported(path: Path):
    """Every shortdiff_tf module a file imports, at the top or inside a function -> first name."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shortdiff_tf"):
            parts = node.module.split(".")[1:]
            names = [parts[0]] if parts else [a.name for a in node.names]
            yield from ((n, node.lineno) for n in names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("shortdiff_tf."):
                    yield a.name.split(".")[1], node.lineno


def test_every_library_module_has_a_layer():
    missing = {p.relative_to(ROOT).as_posix() for p in library_modules()
               if p.relative_to(ROOT / "shortdiff_tf").with_suffix("").parts[0] not in LAYER}
    assert not missing, f"add these modules to a layer: {sorted(missing)}"


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_follow_the_layers(path):
    mine = layer_of(path)
    upward = [f"line {line}: {name} ({LAYERS[LAYER[name]][0]})" for name, line in imported(path)
              if LAYER[name] > mine]
    assert not upward, f"{path.name} ({LAYERS[mine][0]}) imports from above: {upward}"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "shortdiff_tf").with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imported_modules(path: Path, known: set):
    """The library modules (dotted, e.g. prior_fit.glow) a file imports, anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shortdiff_tf"):
            base = node.module[len("shortdiff_tf"):].lstrip(".")
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                yield full if full in known else base
        elif isinstance(node, ast.Import):
            yield from (a.name[len("shortdiff_tf."):] for a in node.names if a.name.startswith("shortdiff_tf."))


def test_no_import_cycles():
    """The import graph of the library's modules has no cycle (a lazy import inside a function
    counts: the layer rule cannot see a cycle between two modules of one layer)."""
    paths = {module_name(p): p for p in library_modules()}
    graph = {m: {d for d in imported_modules(p, set(paths)) if d and d != m and d in paths} for m, p in paths.items()}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        if m in done:
            return
        path.append(m)
        for d in sorted(graph[m]):
            visit(d)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_the_cli_is_the_only_place_that_imports_click():
    offenders = [p.relative_to(ROOT).as_posix() for p in library_modules() if "import click" in p.read_text()]
    assert not offenders


def test_no_module_is_over_300_lines():
    files = library_modules() + sorted((ROOT / "cli").glob("*.py"))
    long = {p.relative_to(ROOT).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"
