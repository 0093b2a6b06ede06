"""The ``fhirgraph`` command line: a thin skin over the library.

Each command parses options, builds Settings, calls one library function and
prints a summary. Errors of the project's own root become one-line messages;
credentials are read from the environment or the config file, never from
options that would show in the process list.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import click

from fhirgraph import crawl as crawl_stage
from fhirgraph import load as load_stage
from fhirgraph import plan as plan_stage
from fhirgraph.cli_common import F, common_options, settings_from
from fhirgraph.cli_inspect import register as register_inspection
from fhirgraph.crawl import ExplicitSeeds, Seeds
from fhirgraph.errors import ConfigError, DanglingReferencesError, FhirgraphError
from fhirgraph.linkage import write_export
from fhirgraph.progress import ProgressDisplay
from fhirgraph.staging import TransferLock, get_transfer, require_transfer, reset_transfer, update_transfer
from fhirgraph.transfer import (
    Session,
    TransferResponse,
    conditional_note,
    linkage_rows,
    resent_note,
    run_transfer,
    verify_transfer,
)


class FhirgraphGroup(click.Group):
    """Turns fhirgraph's own errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DanglingReferencesError as exc:
            for item in exc.dangling:
                click.echo(
                    f"  missing: {item.referrer} {item.path} -> {item.reference}: {item.detail}", err=True
                )
            raise click.ClickException(str(exc)) from None
        except FhirgraphError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to resume", err=True)
            sys.exit(130)


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
    ]
    for option in reversed(options):
        func = option(func)
    return func


def plan_options(func: F) -> F:
    func = click.option(
        "--on-dangling",
        type=click.Choice(plan_stage.ON_DANGLING_CHOICES),
        help="What to do with references to resources the source lacks (default fail: stop before writing).",
    )(func)
    func = click.option(
        "--bundle-size",
        type=int,
        help=f"Entries per transaction bundle (default {plan_stage.DEFAULT_BUNDLE_SIZE}).",
    )(func)
    return func


def load_options(func: F) -> F:
    func = click.option(
        "--key-file",
        type=click.Path(dir_okay=False),
        help="Linkage key file ($FHIRGRAPH_LINKAGE_KEY_FILE; or the key itself in $FHIRGRAPH_LINKAGE_KEY; default ~/.config/fhirgraph/linkage.key, created if missing).",
    )(func)
    func = click.option("--concurrency", type=int, help="Bundles of one level sent at once (default 2).")(
        func
    )
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
    for search in params.get("searches") or ():
        seed = crawl_stage.parse_seed(search, params.get("limit"))
        includes = tuple(("_include", crawl_stage.check_include(inc)) for inc in params.get("includes") or ())
        seeds.append(dataclasses.replace(seed, params=seed.params + includes))
    if params.get("resources"):
        seeds.append(ExplicitSeeds(references=tuple(params["resources"])))
    return seeds


def progress_for(params: dict[str, Any]) -> ProgressDisplay | None:
    wanted = params.get("progress")
    if wanted is None:
        wanted = sys.stderr.isatty()
    return ProgressDisplay() if wanted else None


def echo_notices(session: Session) -> None:
    for notice in session.notices:
        click.echo(notice, err=True)


@click.group(cls=FhirgraphGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fhirgraph")
def cli() -> None:
    """Move interlinked FHIR R4 resources between servers without breaking a reference.

    Resources are staged in Neo4j (crawl), ordered and bundled by Cypher (plan)
    and replayed to the target (load); `transfer` runs all three and resumes
    whatever is unfinished. Every stage can be re-run.
    """


def _stage_command(stages: tuple[str, ...], params: dict[str, Any]) -> TransferResponse:
    settings = settings_from(params)
    seeds = seeds_from(params) if "crawl" in stages else None
    if "crawl" in stages and not seeds:
        with Session(settings) as sess:
            record = get_transfer(sess.graph, settings.transfer)
        if record is None or not record.crawl_done:
            raise ConfigError(
                "nothing to crawl: give a SEARCH such as 'Condition?code=123' or --resource Patient/1"
            )
    progress = progress_for(params)
    with Session(
        settings, need_source="crawl" in stages, need_target="load" in stages, need_key="load" in stages
    ) as sess:
        echo_notices(sess)
        if stages == ("crawl",) and seeds:
            # `crawl` with seeds always crawls them, even if an earlier crawl finished
            record = get_transfer(sess.graph, settings.transfer)
            if record is not None and record.crawl_done:
                update_transfer(sess.graph, settings.transfer, crawl_done=False)
        return run_transfer(
            settings, seeds, progress=progress, stages=stages, session=sess, record_linkage=False
        )


@cli.command()
@common_options
@server_options
@crawl_options
@progress_option
def crawl(**params: Any) -> None:
    """Stage SEARCH results (e.g. 'Condition?code=44054006') and what they reference.

    SEARCH is TYPE?PARAMS on the source, or an operation such as
    'Patient/123/$everything'. Resources already staged are updated,
    references become edges, missing targets are fetched in batches (unless
    --no-get-missing) or marked dangling.
    """
    response = _stage_command(("crawl",), params)
    totals = response.status_totals()
    click.echo(
        f"crawled transfer {response.transfer}: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
    )


@cli.command()
@common_options
@plan_options
def plan(**params: Any) -> None:
    """Find dangling references and cycles, order the creation and pack bundles."""
    settings = settings_from(params)
    with Session(settings) as sess:
        require_transfer(sess.graph, settings.transfer)
        with TransferLock(sess.graph, settings.transfer):
            stats = plan_stage.plan(
                sess.graph,
                settings.transfer,
                bundle_size=settings.bundle_size,
                on_dangling=settings.on_dangling,
            )
    click.echo(
        f"planned {stats.planned} resources in {stats.bundles} bundles over {stats.levels} levels; "
        f"cycles {stats.cycles}, deferred references {stats.deferred_references}, "
        f"dropped references {stats.dropped_references}, skipped resources {stats.skipped} ({stats.seconds:.1f}s)"
    )


@cli.command()
@common_options
@server_options
@load_options
@progress_option
@click.option("--retry-failed", is_flag=True, help="Send bundles that the target rejected before again.")
def load(**params: Any) -> None:
    """Send the planned bundles to the target and record the new ids (resumable)."""
    settings = settings_from(params)
    progress = progress_for(params)
    with Session(settings, need_target=True, need_key=True) as sess:
        echo_notices(sess)
        assert sess.target is not None and sess.key is not None
        require_transfer(sess.graph, settings.transfer)
        with TransferLock(sess.graph, settings.transfer):
            stats = load_stage.load(
                sess.graph,
                sess.target,
                settings.transfer,
                sess.key,
                concurrency=settings.concurrency,
                retry_failed=params["retry_failed"],
                match_existing=settings.match_existing,
                progress=progress,
            )
        if progress:
            progress.close()
    click.echo(
        f"loaded {stats.loaded} resources in {stats.bundles} bundles ({stats.created} created, {stats.matched_existing} matched existing) in {stats.seconds:.1f}s"
    )
    if stats.conditional_types:
        click.echo(conditional_note(stats.conditional_types))
    if stats.resent_bundles:
        click.echo(resent_note(stats.resent_bundles))
    if stats.failures:
        for failure in stats.failures:
            click.echo(f"  bundle {failure.bundle} failed: {failure.message}", err=True)
        raise click.ClickException(f"{len(stats.failures)} bundle(s) failed; see `fhirgraph status`")
    if stats.failed_earlier:
        raise click.ClickException(
            f"{stats.failed_earlier} bundle(s) failed in an earlier run; fix the cause and run "
            "`fhirgraph load --retry-failed`"
        )


@cli.command()
@common_options
@server_options
@crawl_options
@plan_options
@load_options
@progress_option
def transfer(**params: Any) -> None:
    """Crawl, plan and load in one go, resuming whatever is unfinished.

    Run the same command again after an interruption: finished stages are
    skipped and bundles already loaded are not sent again.
    """
    response = _stage_command(("crawl", "plan", "load"), params)
    click.echo(response.summary())
    if response.failures:
        raise click.ClickException(f"{len(response.failures)} bundle(s) failed; see `fhirgraph status`")
    failed = response.status_totals().get("failed", 0)
    if failed:
        raise click.ClickException(
            f"{failed} resource(s) failed in an earlier run; fix the cause and run `fhirgraph load --retry-failed`"
        )


@cli.command()
@common_options
@server_options
def verify(**params: Any) -> None:
    """Compare every transferred resource on the target with its source copy."""
    settings = settings_from(params)
    report = verify_transfer(settings)
    for problem in report.problems:
        click.echo(f"  {problem}", err=True)
    if not report.ok:
        raise click.ClickException(
            f"verify found {report.problem_count} problem(s) in {report.checked} resources"
        )
    click.echo(
        f"verified {report.checked} resources and {report.references_checked} references: all match ({report.seconds:.1f}s)"
    )


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
    settings = settings_from(params)
    with Session(settings) as sess:
        if get_transfer(sess.graph, settings.transfer) is None:
            raise ConfigError(f"no transfer named {settings.transfer!r}")
        rows = linkage_rows(sess.graph, settings.transfer)
        if params["out"]:
            tmp = params["out"] + ".partial"
            with open(tmp, "w", encoding="utf-8") as handle:
                count = write_export(rows, params["fmt"], handle)
            os.replace(tmp, params["out"])  # never leave a half-written export
            click.echo(f"wrote {count} linkage rows to {params['out']}", err=True)
        else:
            write_export(rows, params["fmt"])


@cli.command()
@common_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(**params: Any) -> None:
    """Delete a transfer's staging graph (nothing on the FHIR servers is touched)."""
    settings = settings_from(params)
    with Session(settings) as sess:
        if get_transfer(sess.graph, settings.transfer) is None:
            raise ConfigError(f"no transfer named {settings.transfer!r}")
        if not params["yes"]:
            click.confirm(f"delete the staged transfer {settings.transfer!r}?", abort=True)
        with TransferLock(sess.graph, settings.transfer):  # never under a running transfer
            deleted = reset_transfer(sess.graph, settings.transfer)
    click.echo(f"deleted transfer {settings.transfer} ({deleted} staged resources)")


# Inspection commands (status, and later browse/report) live in their own module.
register_inspection(cli)


def main() -> None:
    # The driver logs its own retries as warnings; the user gets our one-line error instead.
    neo4j_log = logging.getLogger("neo4j")
    neo4j_log.addHandler(logging.NullHandler())
    neo4j_log.propagate = False
    cli(prog_name="fhirgraph")
