"""CLI commands for inspecting transfers: status, browse (Neo4j Browser links) and report."""

from __future__ import annotations

import json
import webbrowser
from typing import Any

import click

from fhirgraph import browse as browse_lib
from fhirgraph.cli_common import common_options, settings_from
from fhirgraph.config import require_password
from fhirgraph.report import TransferOverview, transfer_overview, write_html_report
from fhirgraph.transfer import Session


def _print_status(o: TransferOverview) -> None:
    click.echo(f"transfer {o.transfer}: {o.source} -> {o.target or '(no target yet)'}")
    click.echo(
        "  stages: "
        + ", ".join(
            f"{stage} {'done' if o.stages[stage] else 'open'}"
            + (f" ({o.timings[stage]:.1f}s)" if stage in o.timings else "")
            for stage in ("crawl", "plan", "load")
        )
    )
    statuses = [s for s in o.totals if o.totals[s]]
    width = max([len("type"), len("all"), *(len(t) for t in o.resources)])
    click.echo("  " + f"{'type':<{width}}" + "".join(f"  {s:>11}" for s in statuses) + f"  {'total':>7}")
    for rtype, by_status in o.resources.items():
        cells = "".join(f"  {by_status.get(s, 0) or '.':>11}" for s in statuses)
        click.echo(f"  {rtype:<{width}}{cells}  {sum(by_status.values()):>7}")
    cells = "".join(f"  {o.totals[s]:>11}" for s in statuses)
    click.echo(f"  {'all':<{width}}{cells}  {sum(o.totals.values()):>7}")
    if o.bundles:
        bundle_counts = ", ".join(f"{s} {n}" for s, n in o.bundles_by_status.items() if n)
        click.echo(f"  bundles: {o.bundles_done} done, {o.bundles_left} left ({bundle_counts})")
    else:
        click.echo("  bundles: none planned")
    if o.dangling:
        click.echo(f"  dangling references: {len(o.dangling)} (fhirgraph browse dangling)")
    for failure in o.failures[:20]:
        click.echo(f"  failed {failure['key']}: {failure['error']}")
    if o.last_error:
        click.echo(f"  last error: {o.last_error}")


def register(cli: click.Group) -> None:
    """Add the inspection commands to the ``fhirgraph`` group."""

    @cli.command()
    @common_options
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def status(**params: Any) -> None:
        """Show a transfer's resources per type and status, its bundles and the last error."""
        settings = settings_from(params)
        with Session(settings) as sess:
            overview = transfer_overview(sess.graph, settings.transfer)
        if params["as_json"]:
            click.echo(json.dumps(overview.to_json(), indent=2))
        else:
            _print_status(overview)

    @cli.command()
    @common_options
    @click.argument("query", required=False)
    @click.option(
        "--param",
        "query_params",
        multiple=True,
        metavar="NAME=VALUE",
        help="A query parameter, e.g. key=Patient/123 (repeatable; $transfer comes from --transfer).",
    )
    @click.option("--open", "open_browser", is_flag=True, help="Open the link in a web browser.")
    @click.option(
        "--as-params",
        is_flag=True,
        help="Set Browser parameters (:params {...};) before the query instead of writing the values into it.",
    )
    @click.option(
        "--browser-url",
        metavar="URL",
        help="Neo4j Browser address (default $NEO4J_BROWSER_URL, or the Bolt host on port $NEO4J_HTTP_PORT or 7474).",
    )
    @click.option(
        "--style", "show_style", is_flag=True, help="Print the Browser style sheet and how to apply it."
    )
    def browse(**params: Any) -> None:
        """Print (or --open) a Neo4j Browser link with a saved QUERY filled in.

        Without QUERY, list the saved queries. The link connects Browser to the
        staging database (you log in with the Neo4j password) and puts the query,
        with its parameters, in the editor: press Run to see the graph.
        """
        if params["show_style"]:
            click.echo(browse_lib.style_sheet(), nl=False)
            click.echo(
                f"\n// Apply it in Neo4j Browser: run `:style`, then drag {browse_lib.style_path()} onto "
                "that frame (or paste `:style ` followed by the text above into the editor and run it).",
                err=True,
            )
            return
        settings = settings_from(params)
        if not params["query"]:
            for query in browse_lib.saved_queries():
                click.echo(f"{query.name:<12} {query.description}")
            click.echo(f"Open one with: fhirgraph browse QUERY --transfer {settings.transfer}", err=True)
            return
        query = browse_lib.saved_query(params["query"])
        values: dict[str, browse_lib.ParamValue] = {"transfer": settings.transfer}
        values.update(browse_lib.parse_params(params["query_params"]))
        editor = browse_lib.editor_text(query, values, as_params=params["as_params"])
        url = browse_lib.browser_url(settings.neo4j, editor, base=params["browser_url"])
        click.echo(url)
        if params["open_browser"] and not webbrowser.open(url):
            click.echo("could not start a web browser; open the link above", err=True)

    @cli.command()
    @common_options
    @click.option(
        "--out",
        "out_file",
        required=True,
        type=click.Path(dir_okay=False),
        help="HTML file to write (replaced atomically).",
    )
    def report(**params: Any) -> None:
        """Write a self-contained HTML report of a transfer: counts, timings, throughput, failures."""
        settings = settings_from(params)
        require_password(settings.neo4j)
        with Session(settings) as sess:
            overview = write_html_report(sess.graph, settings.transfer, params["out_file"])
        click.echo(
            f"wrote {params['out_file']}: {sum(overview.totals.values())} resources, "
            f"{len(overview.bundles)} bundles, {len(overview.failures)} failed"
        )
