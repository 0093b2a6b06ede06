from __future__ import annotations

from pathlib import Path

import pytest

from fhirgraph.config import build_settings
from fhirgraph.errors import ConfigError
from fhirgraph.resource_types import check_resource_type


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fhirgraph.toml"
    path.write_text(text)
    return path


def test_precedence_option_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[source]\nurl = "http://file/fhir"\n[transfer]\nbundle_size = 10\nname = "f"\n')
    monkeypatch.setenv("FHIRGRAPH_TRANSFER", "from-env")
    settings = build_settings({("transfer", "bundle_size"): 7}, path)
    assert settings.bundle_size == 7
    assert settings.transfer == "from-env"
    assert settings.source is not None and settings.source.url == "http://file/fhir"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[source]\nurll = "x"\n', "unknown key 'urll' in \\[source\\]"),
        ('[sauce]\nurl = "x"\n', "unknown section \\[sauce\\]"),
        ("[source\n", "not valid TOML"),
        ("[transfer]\nbundle_size = 0\n", "bundle size must be at least 1"),
        ("[transfer]\nbundle_size = -5\n", "bundle size must be at least 1"),
        ('[transfer]\nbundle_size = "big"\n', "whole number"),
        ("[transfer]\nconcurrency = 0\n", "concurrency must be at least 1"),
        ('[transfer]\non_dangling = "ignore"\n', "on_dangling must be one of"),
        ('[transfer]\nname = "a|b"\n', "invalid transfer name"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings({}, write(tmp_path, text))


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_settings({}, tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("name", "hint"), [("Conditions", "Condition"), ("patient", "Patient"), ("Observaton", "Observation")]
)
def test_unknown_resource_type_suggests(name: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=f"did you mean {hint}"):
        check_resource_type(name)


def test_overlap_is_on_unless_turned_off(tmp_path: Path) -> None:
    assert build_settings({}, write(tmp_path, "")).overlap is True
    assert build_settings({}, write(tmp_path, "[transfer]\noverlap = false\n")).overlap is False
    assert build_settings({("transfer", "overlap"): False}, None).overlap is False
    with pytest.raises(ConfigError, match="overlap must be true or false"):
        build_settings({}, write(tmp_path, '[transfer]\noverlap = "no"\n'))


def test_match_existing_is_on_unless_turned_off(tmp_path: Path) -> None:
    assert build_settings({}, write(tmp_path, "")).match_existing is True
    assert build_settings({}, write(tmp_path, "[transfer]\nmatch_existing = false\n")).match_existing is False
    assert build_settings({("transfer", "match_existing"): False}, None).match_existing is False
    with pytest.raises(ConfigError, match="match_existing must be true or false"):
        build_settings({}, write(tmp_path, '[transfer]\nmatch_existing = "no"\n'))
