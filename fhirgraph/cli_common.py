"""Options and settings shared by the CLI modules."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import click

from fhirgraph.config import Settings, build_settings
from fhirgraph.errors import FhirgraphError
from fhirgraph.progress import ProgressDisplay

F = TypeVar("F", bound=Callable[..., Any])


def common_options(func: F) -> F:
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="TOML config file (default ./fhirgraph.toml if present; $FHIRGRAPH_CONFIG).",
        ),
        click.option(
            "--transfer",
            "transfer_name",
            metavar="NAME",
            help="Transfer name in the staging graph (default 'default'; $FHIRGRAPH_TRANSFER).",
        ),
        click.option(
            "--neo4j-uri",
            metavar="URI",
            help="Neo4j Bolt URI (default bolt://127.0.0.1:7687; $NEO4J_URI). Password: $NEO4J_PASSWORD or the config file.",
        ),
        click.option("--neo4j-user", metavar="USER", help="Neo4j user (default neo4j; $NEO4J_USER)."),
        click.option(
            "--neo4j-database", metavar="DB", help="Neo4j database (default neo4j; $NEO4J_DATABASE)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def settings_from(params: dict[str, Any]) -> Settings:
    options = {
        ("source", "url"): params.get("source_url"),
        ("target", "url"): params.get("target_url"),
        ("neo4j", "uri"): params.get("neo4j_uri"),
        ("neo4j", "user"): params.get("neo4j_user"),
        ("neo4j", "database"): params.get("neo4j_database"),
        ("transfer", "name"): params.get("transfer_name"),
        ("transfer", "bundle_size"): params.get("bundle_size"),
        ("transfer", "concurrency"): params.get("concurrency"),
        ("transfer", "read_concurrency"): params.get("read_concurrency"),
        ("transfer", "on_dangling"): params.get("on_dangling"),
        ("transfer", "on_reject"): params.get("on_reject"),
        ("transfer", "workers"): params.get("workers"),
        ("transfer", "key_file"): params.get("key_file"),
        ("transfer", "get_missing"): params.get("get_missing"),
        ("transfer", "match_existing"): params.get("match_existing"),
        ("transfer", "overlap"): params.get("overlap"),
    }
    return build_settings(options, params.get("config_file"))


@contextlib.contextmanager
def progress_for(params: dict[str, Any]) -> Iterator[ProgressDisplay | None]:
    """A progress display if ``--progress`` (default: stderr is a terminal), closed afterwards."""
    wanted = params.get("progress")
    if wanted is None:
        wanted = sys.stderr.isatty()
    progress = ProgressDisplay() if wanted else None
    try:
        yield progress
    finally:
        if progress:
            progress.close()


class Result(Protocol):
    def summary(self, hints: Mapping[str, str] | None = None) -> str: ...

    def error(self) -> FhirgraphError | None: ...


#: how the command line names what an error's ``hint`` points at (see ``errors``)
CLI_HINTS = {
    "on_dangling": "--on-dangling",
    "on_reject": "--on-reject",
    "workers": "--workers",
    "worker": "`fhirgraph load --worker`",
    "lease_seconds": "$FHIRGRAPH_LEASE_SECONDS",
    "bundle_size": "--bundle-size",
    "concurrency": "--concurrency",
    "read_concurrency": "--read-concurrency",
    "match_existing": "--no-match-existing",
    "overlap": "--no-overlap",
    "retry_failed": "`fhirgraph load --retry-failed`",
    "name": "--transfer",
    "source_url": "--source URL",
    "target_url": "--target URL",
    "seeds": "a SEARCH argument or --resource TYPE/ID",
    "resource": "--resource",
    "include": "--include",
    "format": "--format",
    "crawl": "`fhirgraph crawl` or `fhirgraph transfer`",
    "plan": "`fhirgraph plan`",
    "status": "`fhirgraph status`",
    "reset": "`fhirgraph reset`",
    "delete": "--delete",
    "overwrite": "`fhirgraph sync --overwrite`",
    "transfer": "`fhirgraph transfer`",
}


def one_line(exc: FhirgraphError) -> str:
    """The error as the command line shows it: the library's message, then the flag or command."""
    hint = CLI_HINTS.get(exc.hint or "")
    return f"{exc} ({hint})" if hint else str(exc)


def finish(result: Result, *, err: bool = False) -> None:
    """Print a command's summary (on stderr with ``err``); exit with its error, if any, as one line."""
    click.echo(result.summary(CLI_HINTS), err=err)
    error = result.error()
    if error is not None:
        raise error
