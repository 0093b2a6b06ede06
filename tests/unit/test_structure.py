"""The code map holds: stages never import one another, the CLI imports no stage, and the
README's code map names every module of the package."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fhirgraph"
STAGES = ("crawl", "plan", "load", "verify")
#: modules that make up the load stage (the stage and the two parts it is built from)
LOAD_PARTS = ("bundle", "sender")


def imported_modules(path: Path) -> set[str]:
    """Every ``fhirgraph.x`` module a file imports, as ``x`` (first component after the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "fhirgraph":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("fhirgraph."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("fhirgraph."))
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage: str) -> None:
    others = set(STAGES) - {stage}
    imports = imported_modules(PACKAGE / f"{stage}.py")
    assert imports.isdisjoint(others), f"{stage}.py imports {sorted(imports & others)}"


@pytest.mark.parametrize("part", LOAD_PARTS)
def test_the_parts_of_the_load_import_no_stage(part: str) -> None:
    path = PACKAGE / f"{part}.py"
    assert path.exists(), f"fhirgraph/{part}.py is gone: update LOAD_PARTS"
    assert imported_modules(path).isdisjoint(STAGES)


@pytest.mark.parametrize("cli_module", sorted(p.name for p in PACKAGE.glob("cli*.py")))
def test_the_cli_imports_no_stage_only_the_commands(cli_module: str) -> None:
    imports = imported_modules(PACKAGE / cli_module)
    assert imports.isdisjoint(STAGES), f"{cli_module} imports {sorted(imports & set(STAGES))}"
    assert "session" not in imports and "staging" not in imports and "graph" not in imports


def test_config_imports_no_stage() -> None:
    assert imported_modules(PACKAGE / "config.py").isdisjoint(STAGES)


def test_the_readme_code_map_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    modules = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    missing = [m for m in modules if f"`{m}`" not in section]
    assert not missing, f"README code map lacks {missing}"
    stale = [
        line.split("`")[1]
        for line in section.splitlines()
        if line.startswith("| `fhirgraph/") and not (ROOT / line.split("`")[1]).exists()
    ]
    assert not stale, f"README code map names modules that do not exist: {stale}"


STATE_ASSIGNMENT = re.compile(r"\b(t\.(crawl_done|plan_done|load_done|plan_started)|b\.status)\s*=(?!=)")


def state_queries() -> set[str]:
    """Cypher files that change a transfer's state flags or a bundle's status (creating a
    bundle, ``ON CREATE SET``, is the plan's and not a transition)."""
    names = set()
    for path in (ROOT / "cypher").glob("*.cypher"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "SET" in line and "ON CREATE SET" not in line and STATE_ASSIGNMENT.search(line):
                names.add(path.stem)
    return names


def test_only_the_staging_module_runs_the_queries_that_change_state() -> None:
    queries = state_queries()
    assert {"transfer_finish_crawl", "transfer_finish_load", "load_mark_sending"} <= queries
    for path in PACKAGE.rglob("*.py"):
        if path.name == "staging.py":
            continue
        literals = {
            node.value
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert literals.isdisjoint(queries), f"{path.name} runs {sorted(literals & queries)}"


def test_every_package_directory_is_configured_so_setuptools_has_nothing_to_warn_about() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    package_dirs = {name: ROOT / path for name, path in config["package-dir"].items()}
    configured = set(config["packages"])

    def directory(package: str) -> Path:
        for name in sorted(package_dirs, key=len, reverse=True):
            if package == name or package.startswith(name + "."):
                return package_dirs[name].joinpath(*package[len(name) :].split(".")[1:])
        return ROOT.joinpath(*package.split("."))

    found = set()
    for package in configured:
        for sub in directory(package).iterdir():
            if sub.is_dir() and not sub.name.startswith((".", "__")) and any(sub.iterdir()):
                found.add(f"{package}.{sub.name}")
    assert found <= configured, f"directories setuptools would warn about: {sorted(found - configured)}"
    for package, patterns in config["package-data"].items():
        assert package in configured
        assert any(next(directory(package).glob(p), None) for p in patterns), (package, patterns)
