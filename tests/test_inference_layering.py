"""Import direction of Code/inference/ (issue #24): below the scripts, above Code/models/.

Parsed with ``ast`` (nothing is imported), so a lazy import inside a function counts as much as a top-level one.
Mutation checked: ``from Code.engine.selection import best_score`` added to ``Code/inference/metrics.py`` (and
``import Code.reporting.figures`` to ``predictors.py``) made the first test fail, naming the file and module;
``from Code.engine.builders import build_model`` added to ``Code/common/checkpoint.py`` made the second fail.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "Code" / "inference"
ALLOWED = ("Code.inference", "Code.models", "Code.data", "Code.common", "Code.errors")  # and anything outside Code


def hermes_imports(path: Path):
    """``(line, module)`` for every ``import``/``from … import`` of a ``Code…`` module in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import stays inside the package
                yield node.lineno, "Code.inference"
            elif node.module == "Code":  # ``from Code import engine``
                yield from ((node.lineno, f"Code.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, node.module


def allowed(module: str) -> bool:
    if module != "Code" and not module.startswith("Code."):
        return module != "_bootstrap"  # third-party or standard library; _bootstrap is the scripts' path setup
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def test_inference_imports_nothing_above_it():
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 8, f"expected the inference modules in {PACKAGE}"
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}" for p in files
           for line, module in hermes_imports(p) if not allowed(module)]
    assert not bad, "Code/inference/ may import only " + ", ".join(ALLOWED) + ":\n" + "\n".join(bad)


def test_common_imports_only_errors_and_itself():
    """Code/common/ sits below training, inference and models."""
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}" for p in sorted((ROOT / "Code" / "common").glob("*.py"))
           for line, module in hermes_imports(p)
           if (module == "Code" or module.startswith("Code.")) and module.split(".")[1] not in ("common", "errors")]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_every_form_of_import(tmp_path):
    """A bad import in each spelling (top-level, lazy, ``from Code import …``) is found."""
    source = tmp_path / "m.py"
    source.write_text("import Code.engine.trainer\nfrom Code import reporting\n"
                      "def f():\n    from Code.evaluate import resolve_device\n")
    assert [m for _, m in hermes_imports(source) if not allowed(m)] == [
        "Code.engine.trainer", "Code.reporting", "Code.evaluate"]
