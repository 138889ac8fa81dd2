"""scripts/results.py: docs/results.md's demo section from a saved demo report (the writer, not the whole demo)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "results.py"
#: report.json and evaluation/report.json of a real `bci demo` run (plots and paths left as they were)
SAVED = Path(__file__).parent / "data" / "demo-report"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_results_page_from_a_saved_demo_report(tmp_path: Path) -> None:
    shutil.copytree(SAVED, tmp_path / "demo")
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nintro kept\n\n<!-- results.py:begin -->\nstale 0.594\n<!-- results.py:end -->\n\n"
                    "## Larger runs\nkept too\n")
    done = _run("--report", str(tmp_path / "demo" / "report.json"), "--out", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("# Results\n\nintro kept\n") and text.endswith("## Larger runs\nkept too\n")
    assert "stale 0.594" not in text and "SYNTHETIC world" in text
    for needed in ("logical cores", "Python 3.", "torch ", "numpy ", "mne ", "zarr ", "pylsl ", "Commit: `"):
        assert needed in text
    ev = json.loads((SAVED / "evaluation" / "report.json").read_text())
    iv = ev["intervals"]
    for who in ("model", "ridge", "oracle"):
        s = ev["scores"][who]["40-way top-1"]
        assert f"{s['value']:.3f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]" in text
    assert f"{iv['n_boot']} resamples of the {iv['n_units']} test blocks" in text
    live = json.loads((SAVED / "report.json").read_text())["live"]
    assert (f"{100 * live['class_top1']:.1f} % [{100 * live['class_top1_ci95_low']:.1f}, "
            f"{100 * live['class_top1_ci95_high']:.1f}]") in text
    assert _run("--report", str(tmp_path / "demo" / "report.json"), "--out", str(page)).returncode == 0
    assert page.read_text() == text  # regenerating replaces the section, nothing else


def test_results_page_names_the_run_it_was_measured_with(tmp_path: Path) -> None:
    """With the provenance the script records when it runs the demo, the page gives that commit and wall time."""
    shutil.copytree(SAVED, tmp_path / "demo")
    env = {"machine": {"cpu": "Test CPU 9000", "cores": 2, "os": "Linux-test", "python": "3.11.7"},
           "versions": {"torch": "2.14.1", "numpy": "2.4.6"}, "commit": "0123abc", "seconds": 250.4,
           "load_before": [1.0, 1.5, 2.0], "load_after": [2.0, 2.5, 3.0]}
    (tmp_path / "demo" / "results-provenance.json").write_text(json.dumps(env))
    done = _run("--report", str(tmp_path / "demo" / "report.json"), "--out", str(tmp_path / "r.md"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "r.md").read_text()
    assert "Test CPU 9000, 2 logical cores, Linux-test" in text and "torch 2.14.1, numpy 2.4.6." in text
    assert "Commit: `0123abc`." in text and "Demo wall time: 250 s" in text and "1.0 / 1.5 / 2.0 before" in text
    assert text.startswith("# Results on the synthetic world\n\n<!-- results.py:begin -->")


def test_results_script_errors_are_one_line(tmp_path: Path) -> None:
    missing = _run("--report", str(tmp_path / "nope.json"), "--out", str(tmp_path / "r.md"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad = _run("--report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r.md"))
    assert bad.returncode == 2 and "not a JSON object" in bad.stderr
    shutil.copytree(SAVED, tmp_path / "demo")
    (tmp_path / "hand.md").write_text("# written by hand\n")
    unmarked = _run("--report", str(tmp_path / "demo" / "report.json"), "--out", str(tmp_path / "hand.md"))
    assert unmarked.returncode == 2 and "without the <!-- results.py:begin -->" in unmarked.stderr
    assert (tmp_path / "hand.md").read_text() == "# written by hand\n"
