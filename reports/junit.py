"""JUnit XML rendering of a comparison, the test-result format that CI systems display."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from advisor.compare import Comparison

SUITE_NAME = "advisor compare"


def render_junit(comparison: Comparison) -> str:
    """Return one test suite with a test case per regression check; a regression is a <failure>, a check without figures <skipped>."""
    checks = comparison.checks
    n_failures = sum(1 for check in checks if check.status == "failed")
    n_skipped = sum(1 for check in checks if check.status == "skipped")
    counts = {"tests": str(len(checks)), "failures": str(n_failures), "errors": "0"}

    root = ET.Element("testsuites", {"name": SUITE_NAME, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts, "skipped": str(n_skipped)})
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", {"name": "baseline", "value": comparison.baseline_spec})
    ET.SubElement(properties, "property", {"name": "current", "value": comparison.current_spec})

    for check in checks:
        case = ET.SubElement(suite, "testcase", {"classname": "advisor.compare", "name": check.name})
        details = f"{check.message}\nbaseline: {check.baseline}\ncurrent: {check.current}"
        if check.status == "failed":
            failure = ET.SubElement(case, "failure", {"message": check.message, "type": "regression"})
            failure.text = details
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", {"message": check.message})
        else:
            ET.SubElement(case, "system-out").text = details
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
