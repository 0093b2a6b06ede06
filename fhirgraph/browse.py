"""Neo4j Browser links to the staging graph: saved queries, their parameters and the style sheet.

Saved queries live in ``cypher/browse/<name>.cypher``; the first line of each is a
``//`` comment saying what it shows. A link opens Neo4j Browser connected to the
staging database with the query in its editor (``cmd=edit&arg=...``).

How Browser 5.x reads such a link (checked against the real Browser): only the
first ``cmd`` counts; the ``arg`` values are taken from the *percent-decoded*
URL, so a decoded ``&`` or ``#`` would cut the text short. The saved queries
avoid both characters, and parameter values are written as Cypher string
literals with ``\\uXXXX`` escapes for them. A ``;``-separated
``:params {...}; MATCH ...`` also works, but Browser then shows each
statement's summary instead of the graph, so by default the values are written
into the query as literals (one statement, one Run shows the graph), with the
``:params`` command that sets them in a comment line above it.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fhirgraph.errors import ConfigError
from fhirgraph.graph import GraphSettings, cypher

BROWSER_URL_ENV = "NEO4J_BROWSER_URL"
HTTP_PORT_ENV = "NEO4J_HTTP_PORT"
DEFAULT_HTTP_PORT = 7474
STYLE_FILE = "browser_style.grass"
# characters that Browser's URL handling would cut a command at, after it decoded the URL
_URL_UNSAFE = "&#"
_PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

ParamValue = str | int


@dataclass(frozen=True)
class SavedQuery:
    """One ``cypher/browse/<name>.cypher`` file."""

    name: str
    description: str
    text: str

    @property
    def parameters(self) -> list[str]:
        """The ``$parameters`` the query needs, in order of first use."""
        return list(dict.fromkeys(_PARAMETER.findall(self.body)))

    @property
    def body(self) -> str:
        """The query without its leading comment lines."""
        lines = self.text.strip().splitlines()
        while lines and lines[0].lstrip().startswith("//"):
            lines.pop(0)
        return "\n".join(lines)


def saved_query_names() -> list[str]:
    root = importlib.resources.files("fhirgraph.cypher").joinpath("browse")
    return sorted(p.name[: -len(".cypher")] for p in root.iterdir() if p.name.endswith(".cypher"))


def saved_query(name: str) -> SavedQuery:
    names = saved_query_names()
    if not _NAME.match(name) or name not in names:
        raise ConfigError(f"no saved query named {name!r}; known: {', '.join(names)}")
    text = cypher(f"browse/{name}")
    first = text.strip().splitlines()[0] if text.strip() else ""
    description = first.lstrip("/ ").strip() if first.startswith("//") else ""
    return SavedQuery(name=name, description=description, text=text)


def saved_queries() -> list[SavedQuery]:
    return [saved_query(name) for name in saved_query_names()]


def parse_params(items: tuple[str, ...] | list[str]) -> dict[str, ParamValue]:
    """``k=v`` options as parameters: whole numbers become integers, anything else a string."""
    params: dict[str, ParamValue] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"invalid --param {item!r}: use NAME=VALUE, e.g. key=Patient/123")
        params[name] = int(value) if re.fullmatch(r"-?[0-9]{1,15}", value) else value
    return params


def cypher_literal(value: ParamValue) -> str:
    """A Cypher literal for ``value`` that survives Browser's URL handling (no raw ``&``, ``#``)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"unsupported parameter value {value!r}")
    if isinstance(value, int):
        return str(value)
    out = []
    for ch in value:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch in _URL_UNSAFE or ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def params_command(params: Mapping[str, ParamValue]) -> str:
    """Browser's ``:params {...}`` command setting ``params``."""
    return ":params {" + ", ".join(f"{k}: {cypher_literal(v)}" for k, v in params.items()) + "}"


def editor_text(query: SavedQuery, params: Mapping[str, ParamValue], *, as_params: bool = False) -> str:
    """What to put in Browser's editor for ``query`` with ``params``.

    By default the parameter values are written into the query as literals, so
    that one Run shows the graph; ``as_params`` instead sets them as Browser
    parameters first (``:params {...};`` then the query: two statements).
    """
    missing = [p for p in query.parameters if p not in params]
    if missing:
        hint = " ".join(f"--param {p}=..." for p in missing)
        raise ConfigError(f"saved query {query.name!r} needs {', '.join(missing)}: add {hint}")
    used = {p: params[p] for p in query.parameters}
    if as_params:
        return f"{params_command(used)};\n{query.body}"

    def literal(match: re.Match[str]) -> str:
        return cypher_literal(used[match.group(1)])

    return f"// {query.description}\n// {params_command(used)}\n{_PARAMETER.sub(literal, query.body)}"


def browser_base_url(settings: GraphSettings, browser_url: str | None = None) -> str:
    """Browser's address: ``browser_url``, ``$NEO4J_BROWSER_URL``, or the Bolt host on the HTTP port."""
    chosen = browser_url or os.environ.get(BROWSER_URL_ENV)
    if chosen:
        parts = urlsplit(chosen)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"invalid Neo4j Browser URL {chosen!r}: give http(s)://host:port/browser/")
        path = (
            parts.path if parts.path.rstrip("/").endswith("browser") else parts.path.rstrip("/") + "/browser"
        )
        return f"{parts.scheme}://{parts.netloc}{path.rstrip('/')}/"
    port_text = os.environ.get(HTTP_PORT_ENV) or str(DEFAULT_HTTP_PORT)
    if not port_text.isdigit():
        raise ConfigError(f"${HTTP_PORT_ENV} must be a port number, not {port_text!r}")
    host = urlsplit(settings.uri).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if urlsplit(settings.uri).scheme.endswith(("+s", "+ssc")) else "http"
    return f"{scheme}://{host}:{port_text}/browser/"


def connect_url(settings: GraphSettings) -> str:
    """The ``dbms=`` value: the Bolt URI with the user, without any password."""
    parts = urlsplit(settings.uri)
    if not parts.scheme or not parts.hostname:
        raise ConfigError(f"invalid Neo4j URI {settings.uri!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{quote(settings.user, safe='')}@{host}{port}"


def browser_url(settings: GraphSettings, editor: str | None = None, *, base: str | None = None) -> str:
    """A Browser link connected to the staging database, with ``editor`` in the editor."""
    url = (
        f"{browser_base_url(settings, base)}?dbms={quote(connect_url(settings), safe='')}"
        f"&db={quote(settings.database, safe='')}"
    )
    if editor:
        url += f"&cmd=edit&arg={quote(editor, safe='')}"
    return url


def style_sheet() -> str:
    """The Neo4j Browser style (GraSS) shipped with fhirgraph."""
    return importlib.resources.files("fhirgraph").joinpath(STYLE_FILE).read_text(encoding="utf-8")


def style_path() -> str:
    return str(importlib.resources.files("fhirgraph").joinpath(STYLE_FILE))
