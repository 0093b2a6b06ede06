"""Keyed record linkage: ``HMAC-SHA256(key, source_base + "|" + Type/id)``.

The key never enters Neo4j, logs or reports. Only a *fingerprint* of it (an
HMAC of a fixed label, from which the key cannot be recovered) is stored on
the transfer, so that resuming with a different key can be refused.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fhirgraph.errors import ConfigError
from fhirgraph.references import normalise_base

if TYPE_CHECKING:
    from fhirgraph.fhir.client import FhirClient

LINKAGE_SYSTEM = "urn:fhirgraph:linkage"
#: a second tag on every copy, the same for all copies made with one key: its fingerprint.
#: One search for it per type tells whether the target holds any copy made with the key.
KEY_SYSTEM = "urn:fhirgraph:key"
KEY_ENV = "FHIRGRAPH_LINKAGE_KEY"
KEY_FILE_ENV = "FHIRGRAPH_LINKAGE_KEY_FILE"


def default_key_file() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "fhirgraph" / "linkage.key"


@dataclass(frozen=True)
class LinkageKey:
    """The secret key; ``repr`` never shows it."""

    secret: bytes
    origin: str

    def __repr__(self) -> str:
        return f"LinkageKey(origin={self.origin!r})"

    def hash(self, source_base: str, resource_key: str) -> str:
        message = f"{normalise_base(source_base)}|{resource_key}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        return hmac.new(self.secret, b"fhirgraph key fingerprint v1", hashlib.sha256).hexdigest()[:16]


def load_key(key_file: str | Path | None = None, *, create: bool = True) -> tuple[LinkageKey, str | None]:
    """Find the linkage key; return it and a notice for the user (or None).

    Order: ``key_file`` argument, ``$FHIRGRAPH_LINKAGE_KEY``, ``$FHIRGRAPH_LINKAGE_KEY_FILE``,
    the default key file. If none exists and ``create``, a new random key is
    written to the default file with mode 0600.
    """
    if key_file is not None:
        return _read_key_file(Path(key_file), explicit=True)
    env_key = os.environ.get(KEY_ENV)
    if env_key:
        if len(env_key.strip()) < 16:
            raise ConfigError(
                f"${KEY_ENV} is shorter than 16 characters; use a long random secret "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return LinkageKey(env_key.strip().encode(), f"${KEY_ENV}"), None
    env_file = os.environ.get(KEY_FILE_ENV)
    if env_file:
        return _read_key_file(Path(env_file), explicit=True)
    path = default_key_file()
    if path.exists():
        return _read_key_file(path, explicit=False)
    if not create:
        raise ConfigError(f"no linkage key: set ${KEY_ENV} or create the key file {path}")
    return _create_key_file(path), (
        f"created a new linkage key in {path} (mode 0600); keep it secret and back it up: "
        "the same key is needed to link future transfers the same way"
    )


def _read_key_file(path: Path, *, explicit: bool) -> tuple[LinkageKey, str | None]:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"linkage key file {path} does not exist; create it or leave the option out to have one generated"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"linkage key file {path} is not text; put a long random secret in it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read linkage key file {path}: {exc.strerror}") from None
    if len(text) < 16:
        raise ConfigError(f"linkage key file {path} holds fewer than 16 characters; use a long random secret")
    notice = None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        notice = f"warning: linkage key file {path} is readable by other users; run `chmod 600 {path}`"
    origin = str(path) if explicit else f"{path} (default)"
    return LinkageKey(text.encode(), origin), notice


def _create_key_file(path: Path) -> LinkageKey:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created by a concurrent run: use that one
        return _read_key_file(path, explicit=False)[0]
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return LinkageKey(secret.encode(), f"{path} (created)")


def linkage_tag(linkage_hash: str) -> dict[str, str]:
    return {"system": LINKAGE_SYSTEM, "code": linkage_hash}


def key_tag(fingerprint: str) -> dict[str, str]:
    return {"system": KEY_SYSTEM, "code": fingerprint}


def without_fhirgraph_tags(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` without the tags a transfer adds (in place): a copy of a copy gets new ones,
    and verify compares what the source holds with what the target holds apart from them."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("tag"), list):
        tags = [
            t
            for t in meta["tag"]
            if not (isinstance(t, dict) and t.get("system") in (LINKAGE_SYSTEM, KEY_SYSTEM))
        ]
        if tags:
            meta["tag"] = tags
        else:
            del meta["tag"]
        if not meta:
            del resource["meta"]
    return resource


def copies_by_hash(
    target: FhirClient, rtype: str, hashes: Sequence[str], *, summary: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The target's ``rtype`` resources tagged with any of these linkage hashes, by hash.

    One search, sent by POST: a list of hashes may be too long for a URL, and a POST
    search is never answered from a result the server cached before the copies were
    made. ``summary`` asks only for the summary elements (the tags are among them).
    """
    params: dict[str, str | int] = {
        "_tag": ",".join(f"{LINKAGE_SYSTEM}|{h}" for h in hashes),
        "_count": 2 * len(hashes),
    }
    if summary:
        params["_summary"] = "true"
    found: dict[str, list[dict[str, Any]]] = {}
    for page in target.pages(rtype, params, exact=True, post=True):
        for entry in page.get("entry", []):
            resource = entry.get("resource") or {}
            for tag in (resource.get("meta") or {}).get("tag", []):
                if tag.get("system") == LINKAGE_SYSTEM:
                    found.setdefault(tag.get("code", ""), []).append(resource)
    return found


def write_export(rows: Iterable[tuple[str, str]], fmt: str, out: TextIO | None = None) -> int:
    """Write ``hash -> target reference`` rows as CSV or JSON; return the row count."""
    handle = out if out is not None else sys.stdout
    count = 0
    if fmt == "csv":
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["linkage_hash", "target_reference"])
        for linkage_hash, target in rows:
            writer.writerow([linkage_hash, target])
            count += 1
    elif fmt == "json":
        handle.write("{")
        for linkage_hash, target in rows:
            handle.write(
                ("," if count else "") + "\n  " + json.dumps(linkage_hash) + ": " + json.dumps(target)
            )
            count += 1
        handle.write("\n}\n" if count else "}\n")
    else:
        raise ConfigError(f"unknown linkage export format {fmt!r}; use csv or json")
    return count
