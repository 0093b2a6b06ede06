"""Every CLI command has help and is documented in the README; every Cypher file is packaged."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fhirgraph.cli import cli
from fhirgraph.graph import cypher, cypher_names

ROOT = Path(__file__).resolve().parents[2]


def commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        names.append(full)
        if isinstance(command, click.Group):
            names.extend(commands(command, full + " "))
    return names


@pytest.mark.parametrize("command", commands(cli))
def test_every_command_has_help_and_is_in_the_readme(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    readme = (ROOT / "README.md").read_text()
    assert f"fhirgraph {command}" in readme, f"README does not mention `fhirgraph {command}`"


def test_cypher_files_are_loaded_from_the_package() -> None:
    names = cypher_names()
    on_disk = sorted(p.stem for p in (ROOT / "cypher").glob("*.cypher"))
    assert names == on_disk
    assert all(cypher(name).strip() for name in names)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["transfer", "--limit", "0", "Patient?_id=1"], "Error: Invalid value for '--limit'"),
        (["transfer", "--no-such-option"], "Error: No such option '--no-such-option'"),
        (["no-such-command"], "Error: No such command 'no-such-command'."),
        (["plan", "--on-dangling", "ignore"], "Error: Invalid value for '--on-dangling'"),
    ],
)
def test_usage_errors_are_one_line_like_every_other_error(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert "Usage:" not in result.output
