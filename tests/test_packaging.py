"""What a library user installs: the wheel's files and metadata, and the version-drift warnings."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from metaprompt.run.provenance import NUMERIC_PACKAGES, drift_message, version_drift, versions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deprecated" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    (found,) = out.glob("metaprompt-*.whl")
    return found


@pytest.mark.slow
def test_wheel_holds_every_packaged_file_and_the_license(wheel):
    tracked = subprocess.run(["git", "ls-files", "metaprompt", "episodes"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    if not tracked:  # not a git checkout: the files on disk
        tracked = [str(p.relative_to(ROOT)) for d in ("metaprompt", "episodes") for p in (ROOT / d).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts]
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in tracked if f not in names]
    assert not missing, f"files the package ships in the repository but not in the wheel: {missing}"
    assert any(n.endswith("resources/splits.json") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: MIT" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_version_drift_names_only_the_numeric_packages_that_differ():
    now = versions()
    assert version_drift(now) == {}
    old = dict(now, transformers="5.17.0", numpy="0.0", torch=now["torch"])
    assert version_drift(old) == {"transformers": ("5.17.0", now["transformers"])}
    assert version_drift({"peft": "0.17.0"}, {"peft": "0.21.2", "torch": "x"}) == {"peft": ("0.17.0", "0.21.2")}
    assert version_drift({"torch": "2.12.0"}, {}) == {}  # nothing to compare with: no warning
    assert set(NUMERIC_PACKAGES) == {"torch", "transformers", "peft"}
    line = drift_message("the run in r", {"transformers": ("5.17.0", "5.24.0")}, "this evaluation")
    assert "transformers 5.17.0 (now 5.24.0)" in line and "this evaluation" in line


def test_eval_warns_and_records_when_the_run_was_trained_with_other_versions(tmp_path, tiny_data, tiny_models,
                                                                             caplog):
    from metaprompt.cli import main
    from tests.conftest import tiny_overrides

    run = tmp_path / "run"
    sets = [a for item in tiny_overrides(tiny_data, tiny_models("bert"), **{"train.episodes": 2,
                                                                             "train.val_every": 2})
            for a in ("--set", item)]
    assert main(["train", "--out", str(run), *sets]) == 0
    info = json.loads((run / "run.json").read_text())
    info["versions"].update(transformers="5.17.0", peft="0.17.0")
    (run / "run.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING):
        assert main(["eval", str(run), "--episodes", "2", "--json", str(tmp_path / "r.json")]) == 0
    assert "transformers 5.17.0 (now" in caplog.text and "peft 0.17.0 (now" in caplog.text
    drift = json.loads((tmp_path / "r.json").read_text())["version_drift"]
    assert drift["transformers"]["trained"] == "5.17.0" and set(drift) == {"transformers", "peft"}
