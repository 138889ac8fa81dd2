"""The import layers (streams <- bci <- offline, and inside offline) are enforced with import-linter."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["importlinter"]["contracts"]


def _lint_imports() -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe is not None, "import-linter is not installed (it is in the dev extra)"
    return subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept() -> None:
    n = len(_contracts())
    assert n >= 4
    res = _lint_imports()
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{n} kept, 0 broken" in res.stdout


def test_offline_layers_and_runtime_viewer_contracts_are_declared() -> None:
    by_type: dict[str, list[dict]] = {}
    for c in _contracts():
        by_type.setdefault(c["type"], []).append(c)
    layers = [c["layers"] for c in by_type.get("layers", [])]
    assert ["offline.cli | offline.demo", "offline.training | offline.evaluation",
            "offline.data : offline.importers : offline.scoring"] in layers  # training, evaluation independent
    forbidden = {(tuple(c["source_modules"]), tuple(c["forbidden_modules"])) for c in by_type.get("forbidden", [])}
    assert (("bci.runtime",), ("bci.viewer",)) in forbidden
    assert (("streams",), ("bci", "offline")) in forbidden and (("bci",), ("offline",)) in forbidden
