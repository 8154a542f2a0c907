"""The layers of docs/architecture.md hold where an import-linter contract cannot see.

`lint-imports` (run by scripts/test) enforces the contract between packages; these tests
cover what it does not: the DAG files (not a package), what importing the core loads at run
time, and that the picture in the docs is the contract CI enforces.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAG_FILES = sorted((ROOT / "dags").rglob("*.py")) + sorted((ROOT / "benchmarks" / "dags").rglob("*.py"))
# What a DAG file may import: Airflow's authoring API, dates, the standard library's typing
# helpers, and the two layers below the jobs.
DAG_IMPORTS = ("airflow.sdk", "pendulum", "datetime", "typing", "__future__", "onboarding", "risk")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return found


def test_dag_files_import_only_the_sdk_and_the_layers_below() -> None:
    assert DAG_FILES, "no DAG files found"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in DAG_FILES
        for line, module in _imports(path)
        if not any(module == allowed or module.startswith(allowed + ".") for allowed in DAG_IMPORTS)
    ]
    assert not wrong, "DAG files are wiring only (docs/architecture.md):\n" + "\n".join(wrong)


def test_importing_the_core_loads_no_model_and_no_airflow() -> None:
    """A product app that publishes signups with `onboarding` must not load scikit-learn or
    Airflow, nor any layer above the core."""
    code = (
        "import json, sys, onboarding, onboarding.publisher, onboarding.keys, onboarding.airflow;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        json.loads(
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        )
    )
    assert not loaded & {"sklearn", "airflow", "risk", "listener", "archiver", "sla", "ops", "stack"}


def test_the_layers_picture_is_the_enforced_contract() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/render_layers.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_contracts_catch_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    """`lint-imports` (run by scripts/test) fails on a core module that imports the model
    inside a function, the kind of leak nothing flagged before the contracts existed."""
    import shutil

    for package in ("onboarding", "risk", "listener", "archiver", "sla", "ops", "stack", "benchmarks", "testkit"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copytree(ROOT / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__", "schemas"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "onboarding" / "keys.py").open("a") as fh:
        fh.write("\n\ndef _leak() -> None:\n    from risk import model  # noqa: F401\n")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0, result.stdout
    assert "onboarding.keys -> risk.model" in result.stdout
