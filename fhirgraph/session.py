"""What one command opens and closes: the staging graph, the FHIR clients, the linkage key."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Literal

import httpx

from fhirgraph.config import ServerConfig, Settings, build_settings, oauth_scope, require_password
from fhirgraph.errors import ConfigError
from fhirgraph.fhir.auth import build_auth
from fhirgraph.fhir.client import FhirClient
from fhirgraph.graph import Graph
from fhirgraph.linkage import LinkageKey, load_key
from fhirgraph.references import normalise_base
from fhirgraph.staging import get_transfer

Side = Literal["source", "target"]
#: a transport per side instead of the network, for tests (an httpx ``MockTransport``)
Transports = Mapping[Side, httpx.BaseTransport]
#: notices for the user (a key file created, a key file readable by others); the CLI prints them
log = logging.getLogger("fhirgraph")


def make_client(config: ServerConfig, name: Side, transport: httpx.BaseTransport | None = None) -> FhirClient:
    auth = build_auth(
        server=name,
        base_url=normalise_base(config.url),
        username=config.username,
        password=config.password,
        token=config.token,
        client_id=config.client_id,
        client_secret=config.client_secret,
        oidc_provider_url=config.oidc_provider_url,
        token_url=config.token_url,
        private_key_file=config.private_key_file,
        key_id=config.key_id,
        algorithm=config.algorithm,
        scope=oauth_scope(config, name),
    )
    return FhirClient(config.url, name=name, auth=auth, timeout=config.timeout, transport=transport)


def check_distinct(source: str, target: str) -> None:
    if normalise_base(source) == normalise_base(target):
        raise ConfigError(
            f"source and target are the same server ({normalise_base(source)}); give two different servers"
        )


class Session:
    """Opened resources for one command: graph, clients, key. Closes them all.

    A server is opened when the settings name it or the command needs it; a
    needed server that the settings lack is taken from the transfer's record
    (resuming), with credentials from the environment or the config file. A
    needed server is asked for its CapabilityStatement at once, so that a wrong
    URL or missing credentials fail before a transfer is recorded.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        need_source: bool = False,
        need_target: bool = False,
        need_key: bool = False,
        transports: Transports | None = None,
    ):
        self.settings = settings
        self._transports = transports or {}
        self._stack = ExitStack()
        try:
            self.graph = self._stack.enter_context(Graph(require_password(settings.neo4j)))
            self.graph.check()
            self.graph.ensure_schema()
            self.source = self._client(settings.source, "source") if need_source or settings.source else None
            self.target = self._client(settings.target, "target") if need_target or settings.target else None
            if self.source and self.target:
                check_distinct(self.source.base_url, self.target.base_url)
            for client, needed in ((self.source, need_source), (self.target, need_target)):
                if client is not None and needed:
                    client.capability_statement()
            self.key: LinkageKey | None = None
            if need_key:
                self.key, notice = load_key(settings.key_file)
                if notice:
                    log.warning(notice)
        except BaseException:
            self._stack.close()
            raise

    def _client(self, config: ServerConfig | None, name: Side) -> FhirClient:
        if config is None:
            # resuming: the transfer remembers its servers (credentials still come from the environment)
            record = get_transfer(self.graph, self.settings.transfer)
            recorded = (record.source if name == "source" else record.target) if record else ""
            if recorded:
                env = build_settings({(name, "url"): recorded}, self.settings.config_file)
                config = env.source if name == "source" else env.target
        if config is None:
            raise ConfigError(
                f"no {name} server: set FHIRGRAPH_{name.upper()}_URL or [{name}] url in the config file",
                hint=f"{name}_url",
            )
        return self._stack.enter_context(make_client(config, name, self._transports.get(name)))

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
