from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from fhirgraph.errors import ConfigError
from fhirgraph.linkage import KEY_ENV, KEY_FILE_ENV, LinkageKey, load_key, write_export


@pytest.fixture(autouse=True)
def isolated_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_hash_is_keyed_stable_and_base_normalised() -> None:
    key = LinkageKey(b"k" * 32, "test")
    first = key.hash("http://127.0.0.1:8081/fhir/", "Patient/1")
    assert first == key.hash("HTTP://127.0.0.1:8081/fhir", "Patient/1")
    assert first != key.hash("http://127.0.0.1:8081/fhir", "Patient/2")
    assert first != LinkageKey(b"j" * 32, "test").hash("http://127.0.0.1:8081/fhir", "Patient/1")
    assert len(first) == 64


def test_key_is_never_shown() -> None:
    key = LinkageKey(b"super-secret-key-material", "x")
    assert "super-secret" not in repr(key)
    assert "super-secret" not in key.fingerprint


def test_missing_key_is_generated_with_mode_0600(tmp_path: Path) -> None:
    key, notice = load_key()
    path = tmp_path / "config" / "fhirgraph" / "linkage.key"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert notice is not None and str(path) in notice
    again, notice2 = load_key()
    assert again.secret == key.secret and notice2 is None


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "0123456789abcdef0123")
    key, _ = load_key()
    assert key.secret == b"0123456789abcdef0123"
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_key()


def test_explicit_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_key(tmp_path / "nope.key")
    unreadable = tmp_path / "dir.key"
    unreadable.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_key(unreadable)


def test_world_readable_key_file_warns(tmp_path: Path) -> None:
    path = tmp_path / "open.key"
    path.write_text("a" * 40)
    os.chmod(path, 0o644)
    _, notice = load_key(path)
    assert notice is not None and "chmod 600" in notice


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_formats(fmt: str) -> None:
    out = io.StringIO()
    count = write_export(iter([("h1", "Patient/1"), ("h2", "Condition/2")]), fmt, out)
    assert count == 2
    if fmt == "json":
        assert json.loads(out.getvalue()) == {"h1": "Patient/1", "h2": "Condition/2"}
    else:
        assert out.getvalue().splitlines() == [
            "linkage_hash,target_reference",
            "h1,Patient/1",
            "h2,Condition/2",
        ]
