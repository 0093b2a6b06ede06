"""The link `fhirgraph browse` prints opens the real Neo4j Browser on a transfer's graph (headless Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Page, sync_playwright

from fhirgraph import FhirServer
from fhirgraph.fhir.client import FhirClient

from .conftest import CONFIG, ROOT, SOURCE_URL, TARGET_URL, create_on_source, run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# FHIRGRAPH_UPDATE_SCREENSHOT=1 copies the screenshot to docs/browser.png (the one in the README)
SCREENSHOT = ROOT / "docs" / "browser.png"


def small_patient_graph(prefix: str) -> list[dict[str, object]]:
    return [
        {"resourceType": "Patient", "id": f"{prefix}-pat", "name": [{"family": "Example"}]},
        {"resourceType": "Practitioner", "id": f"{prefix}-doc"},
        {"resourceType": "Organization", "id": f"{prefix}-org", "name": "Clinic"},
        {
            "resourceType": "Encounter",
            "id": f"{prefix}-enc",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{prefix}-pat"},
            "participant": [{"individual": {"reference": f"Practitioner/{prefix}-doc"}}],
            "serviceProvider": {"reference": f"Organization/{prefix}-org"},
        },
        {
            "resourceType": "Observation",
            "id": f"{prefix}-obs",
            "status": "final",
            "code": {"text": "heart rate"},
            "subject": {"reference": f"Patient/{prefix}-pat"},
            "encounter": {"reference": f"Encounter/{prefix}-enc"},
            "performer": [{"reference": f"Practitioner/{prefix}-doc"}],
        },
        {
            "resourceType": "Condition",
            "id": f"{prefix}-cond",
            "subject": {"reference": f"Patient/{prefix}-pat"},
            "encounter": {"reference": f"Encounter/{prefix}-enc"},
        },
    ]


def apply_style(page: Page, grass: str) -> None:
    page.click("[data-testid='activeEditor']")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(":style " + " ".join(grass.split()))
    page.click("[data-testid='editor-Run']")
    page.get_by_text("node.Patient").first.wait_for(timeout=30_000)


def test_browse_link_shows_the_patient_neighbourhood_in_neo4j_browser(
    source: FhirClient, stack_env: dict[str, str], run_id: str, tmp_path: Path
) -> None:
    assert shutil.which(CHROMIUM), "Chromium is missing: stack/install-deps installs it"
    prefix = f"browse-{run_id}"
    create_on_source(source, small_patient_graph(prefix))
    name = f"browse-{run_id}"
    response = FhirServer(SOURCE_URL).transfer(
        target_server=FhirServer(TARGET_URL),
        resources=[
            {"resourceType": "Observation", "id": f"{prefix}-obs"},
            {"resourceType": "Condition", "id": f"{prefix}-cond"},
        ],
        transfer_name=name,
    )
    assert response.ok
    url = run_cli(
        "browse", "patient", "--transfer", name, "--param", f"key=Patient/{prefix}-pat"
    ).stdout.strip()
    assert url.startswith(f"http://127.0.0.1:{CONFIG['NEO4J_HTTP_PORT']}/browser/?dbms=")

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = context.new_page()
            page.goto(url)
            password = page.locator("input[data-testid='password']")
            connected = page.get_by_text("You are connected")
            password.or_(connected).first.wait_for(timeout=90_000)
            if password.is_visible():
                password.fill(CONFIG["NEO4J_PASSWORD"])
                page.click("button[data-testid='connect']")
                connected.wait_for(timeout=90_000)
            editor = page.locator("[data-testid='activeEditor']")
            assert f"Patient/{prefix}-pat" in editor.inner_text()
            query = parse_qs(urlsplit(url).query)["arg"][0]
            # apply the shipped style sheet (`:style <GraSS>`), as README tells users, then run the query
            apply_style(page, run_cli("browse", "--style").stdout)
            page.keyboard.insert_text(query)
            page.click("[data-testid='editor-Run']")
            result = page.locator("[data-testid='frame']").filter(
                has=page.locator("[data-testid='cypherFrameSidebarVisualization']")
            )
            result.first.wait_for(timeout=90_000)
            page.locator("[aria-label^='graph-node']").first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # let the force layout settle before the screenshot
            labels = {
                testid.removeprefix("property-details-overview-node-label-")
                for testid in page.locator(
                    "[data-testid^='property-details-overview-node-label-']"
                ).evaluate_all("els => els.map(e => e.getAttribute('data-testid'))")
            }
            types = labels - {"*", "Resource"}
            assert {
                "Patient",
                "Encounter",
                "Observation",
                "Condition",
                "Practitioner",
                "Organization",
            } == types, labels
            assert page.locator("[aria-label^='graph-node']").count() == 6
            shot = tmp_path / "browser.png"
            result.first.screenshot(path=str(shot))

            # --as-params: `:params {...};` then the query, both succeed (the query fails without $key)
            as_params = run_cli(
                "browse", "patient", "--transfer", name, "--param", f"key=Patient/{prefix}-pat", "--as-params"
            ).stdout.strip()
            page.goto(as_params)
            password.or_(connected).first.wait_for(timeout=90_000)
            if password.is_visible():
                password.fill(CONFIG["NEO4J_PASSWORD"])
                page.click("button[data-testid='connect']")
                connected.wait_for(timeout=90_000)
            page.click("[data-testid='editor-Run']")
            statuses = page.locator("[data-testid='multi-statement-list-icon']")
            page.wait_for_function(
                "() => [...document.querySelectorAll(\"[data-testid='multi-statement-list-icon']\")]"
                ".filter(e => ['Status: success', 'Status: error'].includes(e.title)).length === 2",
                timeout=60_000,
            )
            assert [statuses.nth(i).get_attribute("title") for i in range(2)] == ["Status: success"] * 2
        finally:
            context.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("FHIRGRAPH_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
