"""Settings from options, the environment and a TOML config file (in that order of precedence).

This is the one place where settings are typed, defaulted and validated, for
the command line and the Python API alike; the stages trust what they get.

Config file (``--config FILE``, ``$FHIRGRAPH_CONFIG``, or ``./fhirgraph.toml`` if present)::

    [source]
    url = "http://127.0.0.1:8081/fhir"      # also username, password, token,
                                            # client_id, client_secret, oidc_provider_url,
                                            # private_key_file, key_id, algorithm, scope, token_url
    [target]
    url = "http://127.0.0.1:8082/fhir"
    [neo4j]
    uri = "bolt://127.0.0.1:7687"           # also user, password, database
    [transfer]
    name = "cohort-2026"                    # also bundle_size, concurrency,
                                            # on_dangling, key_file, get_missing,
                                            # match_existing, on_reject, workers,
                                            # lease_seconds, overlap
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from fhirgraph.errors import ConfigError
from fhirgraph.fhir.signing import check_algorithm
from fhirgraph.graph import GraphSettings

CONFIG_ENV = "FHIRGRAPH_CONFIG"
DEFAULT_CONFIG = "fhirgraph.toml"
DEFAULT_TRANSFER = "default"
#: chosen by measurement (README, "Bundle size")
DEFAULT_BUNDLE_SIZE = 250
#: fastest of 1, 2 and 4 at 10k (bench/RESULTS.md)
DEFAULT_CONCURRENCY = 2
#: searches read from the source at once (bench/RESULTS.md, "Concurrent reads")
DEFAULT_READ_CONCURRENCY = 4
#: a worker renews its leases every third of this; a dead worker's bundles wait this long
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_NEO4J_URI = "bolt://127.0.0.1:7687"
DEFAULT_NEO4J_USER = "neo4j"
DEFAULT_NEO4J_DATABASE = "neo4j"
#: what the plan does with references to resources the source does not have
OnDangling = Literal["fail", "drop-reference", "skip-resource"]
ON_DANGLING_CHOICES: tuple[OnDangling, ...] = ("fail", "drop-reference", "skip-resource")
#: what the load does with resources that depend on one the target refused
OnReject = Literal["skip", "drop-reference", "stop"]
ON_REJECT_CHOICES: tuple[OnReject, ...] = ("skip", "drop-reference", "stop")
SERVER_KEYS = (
    "url",
    "username",
    "password",
    "token",
    "client_id",
    "client_secret",
    "oidc_provider_url",
    "timeout",
    # SMART Backend Services (client_id with a signed JWT instead of client_secret)
    "private_key_file",
    "key_id",
    "algorithm",
    "scope",
    "token_url",
)
#: the scopes a SMART Backend Services client asks for unless `scope` is set: the source is
#: only read; the target is written and read (copies found by their linkage tags, verify)
DEFAULT_SMART_SCOPES = {"source": "system/*.read", "target": "system/*.read system/*.write"}
SECTIONS: dict[str, tuple[str, ...]] = {
    "source": SERVER_KEYS,
    "target": SERVER_KEYS,
    "neo4j": ("uri", "user", "password", "database"),
    "transfer": (
        "name",
        "bundle_size",
        "concurrency",
        "read_concurrency",
        "on_dangling",
        "key_file",
        "get_missing",
        "match_existing",
        "on_reject",
        "workers",
        "lease_seconds",
        "overlap",
    ),
}
SECRET_KEYS = frozenset({"password", "token", "client_secret"})
#: keys whose value in the config file is not a string: accepted types, and their name for users
KEY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "timeout": ((int, float), "a number of seconds"),
    "bundle_size": ((int,), "a whole number"),
    "concurrency": ((int,), "a whole number"),
    "read_concurrency": ((int,), "a whole number"),
    "get_missing": ((bool,), "true or false"),
    "match_existing": ((bool,), "true or false"),
    "overlap": ((bool,), "true or false"),
    "workers": ((int,), "a whole number"),
    "lease_seconds": ((int, float), "a number of seconds"),
}
ENV = {
    ("neo4j", "uri"): "NEO4J_URI",
    ("neo4j", "user"): "NEO4J_USER",
    ("neo4j", "password"): "NEO4J_PASSWORD",
    ("neo4j", "database"): "NEO4J_DATABASE",
    ("transfer", "name"): "FHIRGRAPH_TRANSFER",
    ("transfer", "bundle_size"): "FHIRGRAPH_BUNDLE_SIZE",
    ("transfer", "concurrency"): "FHIRGRAPH_CONCURRENCY",
    ("transfer", "read_concurrency"): "FHIRGRAPH_READ_CONCURRENCY",
    ("transfer", "on_dangling"): "FHIRGRAPH_ON_DANGLING",
    ("transfer", "on_reject"): "FHIRGRAPH_ON_REJECT",
    ("transfer", "workers"): "FHIRGRAPH_WORKERS",
    ("transfer", "lease_seconds"): "FHIRGRAPH_LEASE_SECONDS",
    **{
        (side, key): f"FHIRGRAPH_{side.upper()}_{key.upper()}"
        for side in ("source", "target")
        for key in SERVER_KEYS
    },
}


@dataclass(frozen=True)
class ServerConfig:
    url: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    oidc_provider_url: str | None = None
    timeout: float | None = None
    #: SMART Backend Services: the client's private key (PEM, JWK or JWK Set), its kid, its
    #: signing algorithm (RS384 for RSA, ES384 for EC P-384 unless set)
    private_key_file: str | None = None
    key_id: str | None = None
    algorithm: str | None = None
    #: the OAuth2 scopes to ask for; None: DEFAULT_SMART_SCOPES for a private key, none for a secret
    scope: str | None = None
    #: the token endpoint (oidc_provider_url is its older name); None: from the server's
    #: .well-known/smart-configuration
    token_url: str | None = None

    def __repr__(self) -> str:  # never show credentials
        return f"ServerConfig(url={self.url!r})"


@dataclass(frozen=True)
class Settings:
    source: ServerConfig | None
    target: ServerConfig | None
    neo4j: GraphSettings
    transfer: str = DEFAULT_TRANSFER
    bundle_size: int = DEFAULT_BUNDLE_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    #: searches (seeds, and batches of missing references) read from the source at once
    read_concurrency: int = DEFAULT_READ_CONCURRENCY
    on_dangling: OnDangling = "fail"
    #: dependents of a resource the target refused: skipped (blocked), sent without the
    #: reference, or the load stops at the refused bundle
    on_reject: OnReject = "skip"
    #: load worker processes that ``transfer`` starts (0: the load runs in the transfer's own process)
    workers: int = 0
    #: how long a load worker's claim on a bundle lasts without a heartbeat (its process died)
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    key_file: str | None = None
    get_missing: bool = True
    #: every create conditional on its linkage tag, not only resends (see load)
    match_existing: bool = True
    #: under an ``on_dangling`` policy that cannot stop the transfer (drop-reference,
    #: skip-resource), ``transfer`` loads what is ready while the crawl goes on
    overlap: bool = True
    config_file: str | None = None

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def validate_transfer_name(name: str) -> str:
    if not name or len(name) > 200 or any(ch in name for ch in "|\n\r\t"):
        raise ConfigError(
            f"invalid transfer name {name!r}: use 1-200 characters without '|' or line breaks",
            hint="name",
        )
    return name


def check_bundle_size(bundle_size: int) -> int:
    if bundle_size < 1:
        raise ConfigError(f"bundle size must be at least 1, not {bundle_size}", hint="bundle_size")
    return bundle_size


def check_concurrency(concurrency: int, name: str = "concurrency") -> int:
    if concurrency < 1:
        raise ConfigError(f"{name} must be at least 1, not {concurrency}", hint=name)
    return concurrency


def check_on_dangling(on_dangling: str) -> OnDangling:
    if on_dangling not in ON_DANGLING_CHOICES:
        raise ConfigError(
            f"on_dangling must be one of {', '.join(ON_DANGLING_CHOICES)}, not {on_dangling!r}",
            hint="on_dangling",
        )
    return on_dangling


def check_on_reject(on_reject: str) -> OnReject:
    if on_reject not in ON_REJECT_CHOICES:
        raise ConfigError(
            f"on_reject must be one of {', '.join(ON_REJECT_CHOICES)}, not {on_reject!r}", hint="on_reject"
        )
    return on_reject


def read_config_file(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """Read and validate the TOML config file; an unknown section or key is an error."""
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    if not chosen.exists():
        if explicit:
            raise ConfigError(f"config file {chosen} does not exist")
        return {}
    try:
        data = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {chosen} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {chosen} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {chosen}: {exc.strerror}") from None
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"config file {chosen}: unknown section [{section}]; known: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"config file {chosen}: {section} must be a [{section}] table")
        for key in values:
            if key not in SECTIONS[section]:
                raise ConfigError(
                    f"config file {chosen}: unknown key {key!r} in [{section}]; "
                    f"known: {', '.join(SECTIONS[section])}"
                )
            expected, kind = KEY_TYPES.get(key, ((str,), "a string"))
            value = values[key]
            # bool is an int in Python, but `bundle_size = true` is a mistake
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
                shown = type(value).__name__ if key in SECRET_KEYS else repr(value)  # never echo a secret
                raise ConfigError(f"config file {chosen}: [{section}] {key} must be {kind}, not {shown}")
    return data


def _pick(
    options: Mapping[tuple[str, str], Any], file: Mapping[str, Mapping[str, Any]], section: str, key: str
) -> Any:
    value = options.get((section, key))
    if value is not None:
        return value
    env = ENV.get((section, key))
    if env and os.environ.get(env):
        return os.environ[env]
    return file.get(section, {}).get(key)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number, not {value!r}") from None


def _server(
    options: Mapping[tuple[str, str], Any], file: Mapping[str, Mapping[str, Any]], side: str
) -> ServerConfig | None:
    values = {key: _pick(options, file, side, key) for key in SERVER_KEYS}
    if not values["url"]:
        return None
    if values["algorithm"]:
        values["algorithm"] = check_algorithm(values["algorithm"], f"{side} algorithm")
    timeout = values.pop("timeout")
    if timeout is None:
        return ServerConfig(**values)
    try:
        seconds = float(timeout)
    except ValueError:
        raise ConfigError(f"{side} timeout must be a number of seconds, not {timeout!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{side} timeout must be more than 0 seconds, not {timeout!r}")
    return ServerConfig(**values, timeout=seconds)


def build_settings(
    options: Mapping[tuple[str, str], Any],
    config_file: str | Path | None = None,
    *,
    default_transfer: str = DEFAULT_TRANSFER,
) -> Settings:
    """Merge options (keyed ``(section, key)``; None means not given), the environment and
    the config file into Settings, in that order of precedence, then the defaults."""
    file = read_config_file(config_file)
    bundle_size = check_bundle_size(
        _int(_or(_pick(options, file, "transfer", "bundle_size"), DEFAULT_BUNDLE_SIZE), "bundle size")
    )
    concurrency = check_concurrency(
        _int(_or(_pick(options, file, "transfer", "concurrency"), DEFAULT_CONCURRENCY), "concurrency")
    )
    read_concurrency = check_concurrency(
        _int(
            _or(_pick(options, file, "transfer", "read_concurrency"), DEFAULT_READ_CONCURRENCY),
            "read_concurrency",
        ),
        "read_concurrency",
    )
    on_dangling = check_on_dangling(_pick(options, file, "transfer", "on_dangling") or "fail")
    on_reject = check_on_reject(_pick(options, file, "transfer", "on_reject") or "skip")
    workers = _int(_or(_pick(options, file, "transfer", "workers"), 0), "workers")
    if workers < 0:
        raise ConfigError(f"workers must be 0 (load in this process) or more, not {workers}", hint="workers")
    lease = _or(_pick(options, file, "transfer", "lease_seconds"), DEFAULT_LEASE_SECONDS)
    try:
        lease_seconds = float(lease)
    except ValueError:
        raise ConfigError(f"lease_seconds must be a number of seconds, not {lease!r}") from None
    if lease_seconds < 3:
        raise ConfigError(f"lease_seconds must be at least 3, not {lease!r}", hint="lease_seconds")
    get_missing = _pick(options, file, "transfer", "get_missing")
    match_existing = _pick(options, file, "transfer", "match_existing")
    overlap = _pick(options, file, "transfer", "overlap")
    neo4j = GraphSettings(
        uri=_pick(options, file, "neo4j", "uri") or DEFAULT_NEO4J_URI,
        user=_pick(options, file, "neo4j", "user") or DEFAULT_NEO4J_USER,
        password=_pick(options, file, "neo4j", "password") or "",
        database=_pick(options, file, "neo4j", "database") or DEFAULT_NEO4J_DATABASE,
    )
    return Settings(
        source=_server(options, file, "source"),
        target=_server(options, file, "target"),
        neo4j=neo4j,
        transfer=validate_transfer_name(str(_or(_pick(options, file, "transfer", "name"), default_transfer))),
        bundle_size=bundle_size,
        concurrency=concurrency,
        read_concurrency=read_concurrency,
        on_dangling=on_dangling,
        on_reject=on_reject,
        workers=workers,
        lease_seconds=lease_seconds,
        key_file=_pick(options, file, "transfer", "key_file"),
        get_missing=True if get_missing is None else bool(get_missing),
        match_existing=True if match_existing is None else bool(match_existing),
        overlap=True if overlap is None else bool(overlap),
        config_file=str(config_file) if config_file is not None else None,
    )


def oauth_scope(config: ServerConfig, side: str) -> str | None:
    """The scopes ``config``'s OAuth2 client asks for on ``side``: ``scope`` if set, else the
    SMART default for a private key; a client secret asks for none unless told."""
    if config.scope:
        return config.scope
    return DEFAULT_SMART_SCOPES.get(side) if config.private_key_file else None


def require_password(settings: GraphSettings) -> GraphSettings:
    if not settings.password:
        raise ConfigError(
            "no Neo4j password: set NEO4J_PASSWORD or put it in the [neo4j] section of the config file",
            hint="password",
        )
    return settings
