"""bench/: the entry point parses its flags without running anything, and the report
module renders a stored run (every section's table, the targets) and a failed section.

The bench modules import each other by plain names from bench/, so they run in a
subprocess here rather than on this session's sys.path.
"""

import json
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
STORED_RUN = BENCH / "results" / "2026-11-24-cpu.json"  # a full run: every section


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_lists_the_sections():
    out = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for name in ("accuracy", "timing", "fy", "scaling", "memory", "pyepo"):
        assert name in out.stdout
    assert "shortest_path" in out.stdout.replace("\n", "").replace(" ", "")


@pytest.mark.slow
def test_report_of_a_stored_run():
    code = f"""
import json, sys
sys.path.insert(0, ".")
import _common as C
C.setup_path()
import report, run, targets
res = json.load(open({str(STORED_RUN)!r}))
res["targets"] = targets.targets_table(res, run.SECTIONS)
failed = dict(res, fy={{"error": "RuntimeError: boom"}})
print(json.dumps({{
    "md": report.render(res, res.get("plots", {{}})),
    "rows": res["targets"],
    "failed": targets.targets_table(failed, run.SECTIONS),
}}))
"""
    out = json.loads(_python(code))
    md = out["md"]
    for heading in (
        "## Targets",
        "## 1. Gradient relative error",
        "## 2. Forward+gradient time",
        "## 4. Fenchel–Young step vs layer",
        "## 5. Shortest paths",
        "## 6. PyEPO 5×5 shortest path",
        "## 7. Scaling",
    ):
        assert heading in md
    benchmarks = {row["benchmark"] for row in out["rows"]}
    assert {"1 gradient accuracy", "2 fwd+grad time", "3 peak memory"} <= benchmarks
    assert {"4 FY vs layer", "5 shortest paths", "6 PyEPO", "7 scaling"} <= benchmarks
    assert all(row["met"] in (True, False, None) for row in out["rows"])
    failed = [r for r in out["failed"] if r["metric"] == "section failed"]
    assert [(r["benchmark"], r["met"]) for r in failed] == [("fy", False)]
    assert not any(r["benchmark"].startswith("4 FY") for r in out["failed"])
