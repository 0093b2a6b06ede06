"""CLI commands for inspecting transfers: status, browse (Neo4j Browser links) and report."""

from __future__ import annotations

import json
import webbrowser
from typing import Any

import click

from fhirgraph import browse as browse_lib
from fhirgraph import commands
from fhirgraph.cli_common import common_options, finish, settings_from


def register(cli: click.Group) -> None:
    """Add the inspection commands to the ``fhirgraph`` group."""

    @cli.command()
    @common_options
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def status(**params: Any) -> None:
        """Show a transfer's resources per type and status, its bundles and the last error."""
        overview = commands.status(settings_from(params))
        click.echo(json.dumps(overview.to_json(), indent=2) if params["as_json"] else overview.summary())

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
        finish(commands.report(settings_from(params), params["out_file"]))
