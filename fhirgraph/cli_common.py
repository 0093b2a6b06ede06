"""Options and settings shared by the CLI modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from fhirgraph.config import Settings, build_settings

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
        ("transfer", "on_dangling"): params.get("on_dangling"),
        ("transfer", "key_file"): params.get("key_file"),
        ("transfer", "get_missing"): params.get("get_missing"),
        ("transfer", "match_existing"): params.get("match_existing"),
    }
    return build_settings(options, params.get("config_file"))
