"""Addresses of the local stack (stack/config.env), for the tests, the demo and the benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fhirgraph.graph import GraphSettings

ROOT = Path(__file__).resolve().parents[2]


def stack_config(root: Path = ROOT) -> dict[str, str]:
    """Values of stack/config.env after the shell has expanded them (environment overrides apply)."""
    script = f'set -a; . "{root}/stack/config.env"; env -0'
    output = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in output.decode().split("\0") if "=" in item)


CONFIG = stack_config()
SOURCE_URL = f"http://127.0.0.1:{CONFIG['HAPI_SOURCE_PORT']}/fhir"
TARGET_URL = f"http://127.0.0.1:{CONFIG['HAPI_TARGET_PORT']}/fhir"
# A target that validates request bodies; runs only after `stack/up validating`.
VALIDATING_URL = f"http://127.0.0.1:{CONFIG['HAPI_VALIDATING_PORT']}/fhir"
NEO4J = GraphSettings(
    uri=f"bolt://127.0.0.1:{CONFIG['NEO4J_BOLT_PORT']}",
    user=CONFIG["NEO4J_USER"],
    password=CONFIG["NEO4J_PASSWORD"],
)
