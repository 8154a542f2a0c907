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

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAG_FILES = sorted((ROOT / "dags").rglob("*.py")) + sorted((ROOT / "benchmarks" / "dags").rglob("*.py"))
# What a DAG file may import: Airflow's authoring API, dates, the standard library's typing
# helpers, and the layers below the jobs (its task bodies and callbacks are airflow_adapter's);
# the benchmarks' DAG files may also take theirs from the benchmarks.
DAG_IMPORTS = ("airflow.sdk", "pendulum", "datetime", "typing", "__future__", "airflow_adapter", "onboarding", "risk")
BENCHMARK_DAG_IMPORTS = ("benchmarks",)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return found


def _allowed(path: Path) -> tuple[str, ...]:
    return DAG_IMPORTS + (BENCHMARK_DAG_IMPORTS if path.is_relative_to(ROOT / "benchmarks") else ())


def test_dag_files_import_only_the_sdk_and_the_layers_below() -> None:
    assert DAG_FILES, "no DAG files found"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in DAG_FILES
        for line, module in _imports(path)
        if not any(module == allowed or module.startswith(allowed + ".") for allowed in _allowed(path))
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
    assert not loaded & {"sklearn", "airflow", "risk", "airflow_adapter", "listener", "archiver", "sla", "ops", "stack"}


def test_the_domain_is_usable_without_airflow() -> None:
    """risk decides an applicant with no Airflow loaded: the steps, the records and publishing."""
    code = (
        "import json, sys, risk.steps, risk.publishing, risk.records, risk.maintenance;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        json.loads(
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        )
    )
    assert "risk" in loaded and "sklearn" in loaded
    assert not loaded & {"airflow", "airflow_adapter"}


def test_the_layers_picture_is_the_enforced_contract() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/render_layers.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("module", "leak", "reported"),
    [
        # the kind of leak nothing flagged before the contracts existed
        ("onboarding/keys.py", "from risk import model", "onboarding.keys -> risk.model"),
        # Airflow outside airflow_adapter: risk must stay testable without it
        ("risk/policy.py", "from airflow.sdk import Param", "risk.policy -> airflow"),
        ("onboarding/keys.py", "import airflow", "onboarding.keys -> airflow"),
    ],
)
def test_the_contracts_catch_a_forbidden_import_inside_a_function(
    tmp_path: Path, module: str, leak: str, reported: str
) -> None:
    """`lint-imports` (run by scripts/test) fails on an import the layers forbid, even one
    made inside a function."""
    import shutil
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    for package in packages:
        skipped = ("__pycache__", "data", "schemas") if package == "tests" else ("__pycache__", "data")
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns(*skipped))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as fh:
        fh.write(f"\n\ndef _leak() -> None:\n    {leak}  # noqa: F401\n")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0, result.stdout
    assert reported in result.stdout
