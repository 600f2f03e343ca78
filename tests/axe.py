"""axe-core run in a Playwright page (the npm package scripts/test.sh installs into node_modules/): the findings
that block a person, serious or critical."""

from pathlib import Path

AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


def blocking_findings(page) -> list[str]:
    assert AXE.is_file(), f"{AXE} is missing: scripts/test.sh installs it (npm ci)"
    page.add_script_tag(path=str(AXE))
    report = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{finding['id']} ({finding['impact']}): {finding['help']} at "
            f"{[node['target'] for node in finding['nodes']][:5]}"
            for finding in report["violations"] if finding["impact"] in BLOCKING]
