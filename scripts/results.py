#!/usr/bin/env python3
"""Regenerate the demo section of docs/results.md from a ``bci demo`` run (the one writer of that section).

    python scripts/results.py                          # runs `bci demo --workdir bci-demo --no-view`, then writes
    python scripts/results.py --report bci-demo/report.json      # from a finished demo run (no rerun)

It writes, between the ``<!-- results.py:begin -->`` / ``<!-- results.py:end -->`` markers of
the output file (the rest of the file is kept; a new file gets only this section): the machine
(CPU model, cores, OS), the package versions (torch, numpy, mne, zarr, pylsl, ...), the git
commit, the demo's wall time (when this script ran it), the split sizes, and the demo's tables —
the offline evaluation (model, ridge, oracle, chance) and the live retrieval — each accuracy with
its 95 % bootstrap interval and the unit resampled. Every number is from the SYNTHETIC world.
Errors (missing or malformed report) are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results.py:begin -->", "<!-- results.py:end -->"
#: Written beside the demo's report.json when this script runs the demo: machine, versions, commit, wall time.
PROVENANCE = "results-provenance.json"
PACKAGES = ("torch", "numpy", "scipy", "mne", "zarr", "pylsl", "open_clip_torch", "pyqtgraph")
TITLE = "# Results on the synthetic world"
#: Fewer blocks than this in the live session: its interval is flagged as crude (as bci evaluate switches units).
FEW_BLOCKS = 10


class ResultsError(ValueError):
    """A demo report that cannot be turned into the results page."""


# ----------------------------------------------------------------------------- provenance
def machine() -> dict[str, Any]:
    """CPU model, logical cores, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version()}


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package (``not installed`` when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def commit(repo: Path = REPO) -> str:
    """``git rev-parse HEAD`` (+ ``-dirty`` with uncommitted changes to tracked files), or ``unknown``."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# ----------------------------------------------------------------------------- reading
def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ResultsError(f"{what} {str(path)!r} does not exist; run `bci demo` first or pass --report PATH")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{what} {str(path)!r} is not JSON ({exc}); rerun the demo") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{what} {str(path)!r} holds a {type(data).__name__}, not a JSON object")
    return data


def provenance() -> dict[str, Any]:
    """This machine, its package versions and the checkout's commit."""
    return {"machine": machine(), "versions": versions(), "commit": commit()}


def load_provenance(report_path: Path) -> dict[str, Any] | None:
    """What this script recorded when it ran the demo that wrote ``report_path`` (None: not run by it)."""
    path = report_path.parent / PROVENANCE
    return _read_json(path, "provenance file") if path.is_file() else None


def load(report_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo report and its evaluation report (``<evaluation dir>/report.json``)."""
    demo = _read_json(report_path, "demo report")
    for key in ("evaluation", "live"):
        if not isinstance(demo.get(key), dict):
            raise ResultsError(f"demo report {str(report_path)!r} has no {key!r} section; is it a `bci demo` "
                               "report.json?")
    ev_dir = report_path.parent / "evaluation"  # the demo writes it beside its report (also in a copied folder)
    if not (ev_dir / "report.json").is_file():
        ev_dir = Path(demo["evaluation"].get("dir", ""))
    return demo, _read_json(ev_dir / "report.json", "evaluation report")


# ----------------------------------------------------------------------------- writing
def _num(score: dict[str, Any] | None, pct: bool = False) -> str:
    if not score or score.get("value") is None:
        return "–"
    f = (lambda v: f"{100 * v:.1f} %") if pct else (lambda v: f"{v:.3f}")
    text = f(score["value"])
    if score.get("ci95_low") is not None and score.get("ci95_high") is not None:
        lo, hi = (f"{100 * score[k]:.1f}" if pct else f"{score[k]:.2f}" for k in ("ci95_low", "ci95_high"))
        text += f" [{lo}, {hi}]"
    return text


def _evaluation_table(ev: dict[str, Any]) -> list[str]:
    scores = ev.get("scores") or {}
    model = scores.get("model") or {}
    if not model:
        raise ResultsError("the evaluation report has no model scores")
    cols = [c for c in ("model", "ridge", "oracle") if c in scores]
    lines = ["| metric | " + " | ".join(cols) + " | chance | n |", "|---" * (len(cols) + 3) + "|"]
    for key, s in model.items():
        cells = [_num(scores[c].get(key)) for c in cols]
        lines.append(f"| {s.get('name') or key} | " + " | ".join(cells) + f" | {s['chance']:.3f} | {s['n']} |")
    iv = ev.get("intervals")
    if iv:
        lines += ["", f"[low, high]: {iv['level']:.0%} {iv.get('method', 'bootstrap')}: {iv['n_boot']} resamples of "
                      f"the {iv['n_units']} test {iv['unit']}s (seed {iv['seed']}); chance is exact."]
    return lines


def _live_table(live: dict[str, Any]) -> list[str]:
    def score(key: str) -> dict[str, Any]:
        return {"value": live.get(key), "ci95_low": live.get(f"{key}_ci95_low"),
                "ci95_high": live.get(f"{key}_ci95_high")}

    lines = ["| live retrieval (200-image gallery, 5 per class) | value | chance |", "|---|---|---|",
             f"| class of the top image (top-1) | {_num(score('class_top1'), True)} | "
             f"{100 * live['class_top1_chance']:.1f} % |",
             f"| class among the top 5 (top-5) | {_num(score('class_top5'), True)} | "
             f"{100 * live['class_top5_chance']:.1f} % |",
             f"| exact image first | {_num({'value': live.get('image_top1')}, True)} | "
             f"{100 * live['image_top1_chance']:.1f} % |"]
    iv = live.get("intervals")
    if iv:
        lines += ["", f"[low, high]: {iv['level']:.0%} percentile bootstrap, {iv['n_boot']} resamples of the "
                      f"{iv['n_units']} {iv['unit']}s of the live session (seed {iv['seed']})."]
        if iv["unit"] == "block" and iv["n_units"] < FEW_BLOCKS:
            lines.append(f"Only {iv['n_units']} blocks (one class each) fit in the live step: the live numbers depend "
                         "on which classes were shown and their interval is crude; the offline table is the "
                         "measurement, the live step shows that decoding works on a new session.")
    return lines


def section(demo: dict[str, Any], ev: dict[str, Any], env: dict[str, Any] | None = None) -> str:
    """The generated Markdown section (between the markers).

    ``env``: the provenance recorded when the demo ran (:func:`load_provenance`); None: this machine
    now, said so on the page.
    """
    recorded = env is not None
    env = env or provenance()
    m, live = env["machine"], demo["live"]
    seconds = env.get("seconds")
    protocol = ev.get("protocol") or {}
    sizes = protocol.get("sizes") or {}
    synthetic = bool(demo.get("synthetic_world")) and bool(ev.get("synthetic_world", True))
    out = [BEGIN, "", "## The demo (`bci demo`, default settings, seed " + f"{demo.get('seed', 0)})", "",
           "```", "python scripts/results.py        # runs `bci demo --workdir bci-demo --no-view`, rewrites this section",
           "```", "",
           ("**SYNTHETIC world**: simulated EEG of one simulated subject and procedurally drawn stimuli, not "
            "recordings from people." if synthetic else "**Not** labelled synthetic by the demo report."),
           "Generated by `scripts/results.py` from the demo's `report.json`; do not edit by hand.", "",
           f"* Machine: {m['cpu']}, {m['cores']} logical cores, {m['os']}, Python {m['python']}; no GPU used.",
           "* Packages: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
           f"* Commit: `{env['commit']}`" + ("." if recorded else " (when this page was written; the demo run "
                                               "did not record its own)."),
           (f"* Demo wall time: {seconds:.0f} s (every step redone; load average "
            f"{_load(env.get('load_before'))} before, {_load(env.get('load_after'))} after, on a machine shared "
            "with other jobs)." if seconds is not None
            else f"* Demo wall time (its own report; steps it reused are not timed): "
                 f"{demo.get('seconds', float('nan')):.0f} s."),
           ]
    if sizes:
        out.append(f"* Split {protocol.get('name', '?')!r}: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                   + " windows, whole blocks in one part; scaler and ridge fitted on train only.")
    out += ["", "### Offline: the sample-level encoder on the held-out test blocks of session 0", "",
            *_evaluation_table(ev), "",
            f"### Live: a new session of the same subject over LSL ({live.get('windows')} windows, "
            f"{live.get('scored')} scored)", "", *_live_table(live), "",
            f"Latency (last sample in → result out): p50 {live['latency_p50_ms']:.2f} ms, "
            f"p99 {live['latency_p99_ms']:.2f} ms; replay `--speed max` gave the same windows and embeddings: "
            f"{demo.get('replay', {}).get('same_as_live')}.", "", END]
    return "\n".join(out) + "\n"


def _load(avg: list[float] | None) -> str:
    return "unknown" if not avg else " / ".join(f"{v:.1f}" for v in avg)


def write(out: Path, text: str) -> None:
    """Replace the marked section of ``out`` (or write a new page holding only it)."""
    if out.is_file():
        old = out.read_text(encoding="utf-8")
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1].lstrip("\n")
            out.write_text(head + text + ("\n" + tail if tail else ""), encoding="utf-8")
            return
        raise ResultsError(f"{str(out)!r} exists without the {BEGIN} / {END} markers; add them around the "
                           "section to regenerate, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{TITLE}\n\n{text}", encoding="utf-8")


def run_demo(workdir: Path) -> Path:
    """``bci demo --workdir WORKDIR --no-view --force`` (every step redone); writes :data:`PROVENANCE` beside
    its report (machine, versions, commit taken before the run, wall time, load average) and returns the report."""
    env = provenance()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bci.cli", "demo", "--workdir", str(workdir), "--no-view", "--force"],
                   check=True, cwd=REPO)
    env.update(seconds=time.perf_counter() - t0, load_before=load,
               load_after=os.getloadavg() if hasattr(os, "getloadavg") else None)
    (workdir / PROVENANCE).write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    return workdir / "report.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example:\n  python scripts/results.py --report bci-demo/report.json")
    p.add_argument("--report", type=Path, help="a finished demo's report.json (default: run the demo first)")
    p.add_argument("--workdir", type=Path, default=REPO / "bci-demo", help="the demo's work folder [bci-demo]")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results.md", help="page to write [docs/results.md]")
    args = p.parse_args(argv)
    try:
        if args.report is None:
            args.report = run_demo(args.workdir)
        demo, ev = load(args.report)
        write(args.out, section(demo, ev, load_provenance(args.report)))
    except (ResultsError, subprocess.CalledProcessError) as exc:
        print(f"results.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"results.py: error: the report has no field {exc}; is it from this version of `bci demo`? rerun it",
              file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
