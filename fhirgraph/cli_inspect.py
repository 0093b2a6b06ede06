"""CLI commands for inspecting transfers: status (and the Neo4j Browser and report helpers)."""

from __future__ import annotations

import json
from typing import Any

import click

from fhirgraph.cli_common import common_options, settings_from
from fhirgraph.errors import ConfigError
from fhirgraph.staging import get_transfer
from fhirgraph.transfer import Session, status_counts


def register(cli: click.Group) -> None:
    """Add the inspection commands to the ``fhirgraph`` group."""

    @cli.command()
    @common_options
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def status(**params: Any) -> None:
        """Show a transfer's resources per type and status, and its bundles."""
        settings = settings_from(params)
        with Session(settings) as sess:
            record = get_transfer(sess.graph, settings.transfer)
            if record is None:
                raise ConfigError(f"no transfer named {settings.transfer!r}")
            counts = status_counts(sess.graph, settings.transfer)
            bundles = {
                row["status"]: int(row["count"])
                for row in sess.graph.execute("load_summary", transfer=settings.transfer)
            }
            failures = sess.graph.execute("status_failures", transfer=settings.transfer, limit=20)
        if params["as_json"]:
            click.echo(
                json.dumps(
                    {
                        "transfer": record.name,
                        "source": record.source,
                        "target": record.target,
                        "crawl_done": record.crawl_done,
                        "plan_done": record.plan_done,
                        "load_done": record.load_done,
                        "resources": counts,
                        "bundles": bundles,
                        "failures": failures,
                        "timings": record.timings,
                    },
                    indent=2,
                )
            )
            return
        click.echo(f"transfer {record.name}: {record.source} -> {record.target or '(no target yet)'}")
        click.echo(
            f"  stages: crawl {'done' if record.crawl_done else 'open'}, plan {'done' if record.plan_done else 'open'}, load {'done' if record.load_done else 'open'}"
        )
        for rtype, by_status in sorted(counts.items()):
            click.echo(f"  {rtype:<28} " + "  ".join(f"{s}={n}" for s, n in sorted(by_status.items())))
        click.echo(
            "  bundles: " + (", ".join(f"{s} {n}" for s, n in sorted(bundles.items())) or "none planned")
        )
        for failure in failures:
            click.echo(f"  failed {failure['key']}: {failure['error']}")
