"""The ``fhirgraph`` command line: a thin skin over the library.

Each command parses options, builds Settings, calls one library function and
prints a summary. Errors of the project's own root become one-line messages;
credentials are read from the environment or the config file, never from
options that would show in the process list.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, NoReturn

import click

from fhirgraph import commands
from fhirgraph.cli_common import CLI_HINTS, F, common_options, finish, one_line, progress_for, settings_from
from fhirgraph.cli_inspect import register as register_inspection
from fhirgraph.config import (
    DEFAULT_BUNDLE_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_READ_CONCURRENCY,
    ON_DANGLING_CHOICES,
    ON_REJECT_CHOICES,
)
from fhirgraph.errors import ConfigError, DanglingReferencesError, FhirgraphError
from fhirgraph.seeds import ExplicitSeeds, ExportSeed, Seeds, check_include, parse_seed


class FhirgraphGroup(click.Group):
    """Turns fhirgraph's own errors and click's usage errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DanglingReferencesError as exc:
            for item in exc.dangling:
                click.echo(
                    f"  missing: {item.referrer} {item.path} -> {item.reference}: {item.detail}", err=True
                )
            raise click.ClickException(one_line(exc)) from None
        except FhirgraphError as exc:
            raise click.ClickException(one_line(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to resume", err=True)
            sys.exit(130)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # click prints usage lines before a usage error; every other error is one line
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            _exit(f"Error: {exc.format_message()}", exc.exit_code)
        except click.ClickException as exc:
            _exit(f"Error: {exc.format_message()}", exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


def _exit(line: str, code: int) -> NoReturn:
    click.echo(line, err=True)
    sys.exit(code)


def server_options(func: F) -> F:
    func = click.option(
        "--target",
        "target_url",
        metavar="URL",
        help="Target FHIR base URL ($FHIRGRAPH_TARGET_URL; credentials: $FHIRGRAPH_TARGET_TOKEN, _USERNAME/_PASSWORD, _CLIENT_ID/_CLIENT_SECRET/_OIDC_PROVIDER_URL).",
    )(func)
    func = click.option(
        "--source",
        "source_url",
        metavar="URL",
        help="Source FHIR base URL ($FHIRGRAPH_SOURCE_URL; credentials likewise with FHIRGRAPH_SOURCE_*).",
    )(func)
    return func


def crawl_options(func: F) -> F:
    options = [
        click.argument("searches", nargs=-1, metavar="[SEARCH]..."),
        click.option(
            "--resource",
            "resources",
            multiple=True,
            metavar="TYPE/ID",
            help="Transfer this source resource (repeatable).",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="At most this many matches per search."),
        click.option(
            "--include",
            "includes",
            multiple=True,
            metavar="TYPE:PARAM",
            help="Add _include=TYPE:PARAM to each search (repeatable).",
        ),
        click.option(
            "--get-missing/--no-get-missing",
            default=None,
            help="Fetch referenced resources that the seeds do not include (default: on).",
        ),
        click.option(
            "--read-concurrency",
            type=int,
            help=f"Searches read from the source at once: seeds, and batches of missing references "
            f"(default {DEFAULT_READ_CONCURRENCY}).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def plan_options(func: F) -> F:
    func = click.option(
        "--on-dangling",
        type=click.Choice(ON_DANGLING_CHOICES),
        help="What to do with references to resources the source lacks (default fail: stop before writing).",
    )(func)
    func = click.option(
        "--bundle-size",
        type=int,
        help=f"Entries per transaction bundle (default {DEFAULT_BUNDLE_SIZE}).",
    )(func)
    return func


def load_options(func: F) -> F:
    func = click.option(
        "--on-reject",
        type=click.Choice(ON_REJECT_CHOICES),
        help="Resources that refer to one the target refused: skip them (default; they are reported "
        "as blocked), drop-reference (send them without that reference) or stop (stop the load at the "
        "refused bundle). Either way the refused resources are isolated and reported with the target's "
        "OperationOutcome, except under stop.",
    )(func)
    func = click.option(
        "--key-file",
        type=click.Path(dir_okay=False),
        help="Linkage key file ($FHIRGRAPH_LINKAGE_KEY_FILE; or the key itself in $FHIRGRAPH_LINKAGE_KEY; default ~/.config/fhirgraph/linkage.key, created if missing).",
    )(func)
    func = click.option(
        "--concurrency",
        type=int,
        help=f"Transactions sent to the target at once (default {DEFAULT_CONCURRENCY}).",
    )(func)
    func = click.option(
        "--match-existing/--no-match-existing",
        default=None,
        help="Make every create conditional on its linkage tag, so copies that an earlier transfer with "
        "the same key left on the target are matched, not duplicated (default: on). Off: plain creates, "
        "about 25% faster, for a target that holds no such copies; a resend after an unknown outcome "
        "is conditional either way.",
    )(func)
    return func


def progress_option(func: F) -> F:
    return click.option(
        "--progress/--no-progress", default=None, help="Show progress (default: when stderr is a terminal)."
    )(func)


def seeds_from(params: dict[str, Any]) -> list[Seeds]:
    seeds: list[Seeds] = []
    includes = tuple(("_include", check_include(inc)) for inc in params.get("includes") or ())
    for search in params.get("searches") or ():
        seed = parse_seed(search, params.get("limit"))
        if isinstance(seed, ExportSeed) and includes:
            raise ConfigError(f"{search!r} is a Bulk Data export, which takes no --include")
        seeds.append(dataclasses.replace(seed, params=seed.params + includes))
    if params.get("resources"):
        seeds.append(ExplicitSeeds(references=tuple(params["resources"])))
    return seeds


@click.group(cls=FhirgraphGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fhirgraph")
def cli() -> None:
    """Move interlinked FHIR R4 resources between servers without breaking a reference.

    Resources are staged in Neo4j (crawl), ordered and bundled by Cypher (plan)
    and replayed to the target (load); `transfer` runs all three and resumes
    whatever is unfinished. Every stage can be re-run.
    """


@cli.command()
@common_options
@server_options
@crawl_options
@progress_option
def crawl(**params: Any) -> None:
    """Stage SEARCH results (e.g. 'Condition?code=44054006') and what they reference.

    SEARCH is TYPE?PARAMS on the source, an operation such as
    'Patient/123/$everything', or a Bulk Data export: '$export',
    'Patient/$export' or 'Group/ID/$export', with _type, _typeFilter,
    _since and patient (e.g. '$export?_type=Patient,Observation'). Resources already staged are updated,
    references become edges, missing targets are fetched in batches (unless
    --no-get-missing) or marked dangling.
    """
    with progress_for(params) as progress:
        result = commands.crawl(settings_from(params), seeds_from(params), progress=progress)
    finish(result)


@cli.command()
@common_options
@plan_options
def plan(**params: Any) -> None:
    """Find dangling references and cycles, order the creation and pack bundles."""
    finish(commands.plan(settings_from(params)))


@cli.command()
@common_options
@server_options
@load_options
@progress_option
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Send again what failed before, after a fix on the source or the target: failed bundles, "
    "and the resources the target rejected and those they blocked, read from the source again.",
)
@click.option(
    "--worker",
    is_flag=True,
    help="Load as one of several workers sharing the transfer, on this machine or others: claim "
    "ready bundles with a lease ($FHIRGRAPH_LEASE_SECONDS, default 60) instead of locking the transfer.",
)
def load(**params: Any) -> None:
    """Send the planned bundles to the target and record the new ids (resumable)."""
    with progress_for(params) as progress:
        result = commands.load(
            settings_from(params),
            retry_failed=params["retry_failed"],
            worker=params["worker"],
            progress=progress,
        )
    for line in result.failure_lines(CLI_HINTS):
        click.echo(line, err=True)
    finish(result)


@cli.command()
@common_options
@server_options
@crawl_options
@plan_options
@load_options
@progress_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Load with this many worker processes on this machine (default: the load runs in this "
    "process). More can join from other machines with `fhirgraph load --worker`.",
)
@click.option(
    "--overlap/--no-overlap",
    default=None,
    help="With --on-dangling drop-reference or skip-resource, load what is ready while the crawl "
    "goes on (default: on). Under the default --on-dangling fail nothing is written before the "
    "crawl has ended and no reference dangles.",
)
def transfer(**params: Any) -> None:
    """Crawl, plan and load in one go, resuming whatever is unfinished.

    Run the same command again after an interruption: finished stages are
    skipped and bundles already loaded are not sent again.
    """
    with progress_for(params) as progress:
        result = commands.transfer(
            settings_from(params), seeds_from(params), progress=progress, record_linkage=False
        )
    finish(result)


@cli.command()
@common_options
@server_options
@crawl_options
@plan_options
@load_options
@progress_option
@click.option(
    "--delete",
    is_flag=True,
    help="Remove from the target the copies of resources deleted on the source or no longer matched "
    "by the seeds (default: report them). A copy that something else on the target refers to is kept.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Update copies that were changed on the target since fhirgraph wrote them (default: leave "
    "them and report a conflict).",
)
def sync(**params: Any) -> None:
    """Bring a transferred copy up to date with what changed on the source.

    Runs the transfer's seeds again, restricted to what changed since its last
    run (SEARCH arguments add seeds): new resources are created, changed ones
    updated in place on the target, unchanged ones not sent, deletions reported
    (removed with --delete). Run it again after an interruption; each change
    is applied once.
    """
    with progress_for(params) as progress:
        result = commands.sync(
            settings_from(params),
            seeds_from(params),
            delete=params["delete"],
            overwrite=params["overwrite"],
            progress=progress,
        )
    finish(result)


@cli.command()
@common_options
@server_options
def verify(**params: Any) -> None:
    """Compare every transferred resource on the target with its source copy."""
    result = commands.verify(settings_from(params))
    finish(result, err=not result.report.ok)


@cli.group()
def linkage() -> None:
    """Record linkage: keyed hash of each source resource -> its target reference."""


@linkage.command("export")
@common_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="Write to FILE instead of stdout."
)
def linkage_export(**params: Any) -> None:
    """Write hash -> target reference for every loaded resource."""
    result = commands.export_linkage(settings_from(params), params["fmt"], path=params["out"])
    if result.path is not None:
        click.echo(result.summary(), err=True)


@cli.command()
@common_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(**params: Any) -> None:
    """Delete a transfer's staging graph (nothing on the FHIR servers is touched)."""

    def confirm(question: str) -> bool:
        return bool(params["yes"]) or click.confirm(question, abort=True)

    finish(commands.reset(settings_from(params), confirm=confirm))


# Inspection commands (status, and later browse/report) live in their own module.
register_inspection(cli)


def main() -> None:
    # The driver logs its own retries as warnings; the user gets our one-line error instead.
    neo4j_log = logging.getLogger("neo4j")
    neo4j_log.addHandler(logging.NullHandler())
    neo4j_log.propagate = False
    # the library's notices for the user (see session.log), as plain lines on stderr
    notices = logging.StreamHandler()
    notices.setFormatter(logging.Formatter("%(message)s"))
    fhirgraph_log = logging.getLogger("fhirgraph")
    fhirgraph_log.addHandler(notices)
    fhirgraph_log.propagate = False
    cli(prog_name="fhirgraph")
