"""The committed cpu-profile results (experiments/results/cpu): each results file names what
produced it and follows the results schema, the committed report.md is what
`python experiments/report.py` makes of them today, and the
figures the README and docs/experiments.md quote are the ones in the results files (those
tables are written by hand, so a rerun that is not copied into them fails here)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from metaprompt.results import read_results

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "experiments") not in sys.path:  # the report lives in experiments/, beside studies.py
    sys.path.insert(0, str(ROOT / "experiments"))

from reporting import build_report  # noqa: E402
from reporting.compare import pct  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "cpu"
TITLE = "metaprompt studies, cpu profile"

pytestmark = pytest.mark.skipif(not (RESULTS / "report.md").is_file(), reason="no committed cpu results")


def results_files() -> list[Path]:
    return sorted(RESULTS.glob("*/*/results.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def by_init(results: dict) -> dict[str, dict]:
    return {row["init"]: row for row in results["results"]}


def test_every_cpu_cell_with_data_here_has_committed_results(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    from studies import build_cells

    # Amazon's data could not be obtained on this project's machines, so its cells never ran
    expected = {cell.id for cell in build_cells("cpu") if cell.dataset != "amazon"}
    committed = {str(path.parent.relative_to(RESULTS)) for path in results_files()}
    assert committed == expected


def test_each_results_file_names_its_command_commit_model_and_data():
    for path in results_files():
        r = read_results(path)  # the schema of metaprompt.results
        where = path.relative_to(ROOT)
        assert r["provenance"]["command"].startswith("metaprompt "), where
        assert len(r["provenance"]["commit"].split("+")[0]) == 40, where
        assert r["model"], where
        assert len(r["data_sha256"]) == 64 and len(r["episodes_sha256"]) == 64, where
        assert r["n_episodes"] == len(r["results"][0]["accuracies_per_episode"]), where


def test_committed_report_is_what_report_makes_of_the_committed_results(tmp_path):
    copy = tmp_path / "cpu"
    shutil.copytree(RESULTS, copy, ignore=shutil.ignore_patterns("*.png", "report.md"))
    baselines = tmp_path / "baselines"  # beside the copy, as experiments/results/baselines is beside cpu/
    shutil.copytree(RESULTS.parent / "baselines", baselines)
    fresh = build_report([copy], copy, title=TITLE, baselines=[baselines]).read_text().splitlines()
    committed = (RESULTS / "report.md").read_text().splitlines()
    # line 3 says when and by which command line the report was generated
    assert len(fresh) == len(committed)
    differing = [i + 1 for i, (a, b) in enumerate(zip(fresh, committed)) if a != b and i != 2]
    assert not differing, f"report.md is stale from line {differing[0]}: rerun `python experiments/report.py " \
                          f"experiments/results/cpu --out experiments/results/cpu --title \"{TITLE}\" " \
                          f"--baselines experiments/results/baselines`"
    for line in committed:
        if line.startswith("![") and "(" in line:
            assert (RESULTS / line.split("(", 1)[1].rstrip(")")).is_file(), line


@pytest.mark.docs
@pytest.mark.parametrize("study", ["main", "frozen"])
def test_docs_quote_the_committed_figures(study):
    # prose wraps lines anywhere, so compare with runs of white space made one space
    docs = " ".join((ROOT / "docs" / "experiments.md").read_text().split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for path in sorted((RESULTS / study).glob("*/results.json")):
        rows = by_init(load(path))
        for init in ("pretrained", "meta"):
            figure = pct(rows[init]["accuracy_mean"], rows[init]["accuracy_ci95"])
            assert figure in docs, f"docs/experiments.md lacks {study}/{path.parent.name} {init}: {figure}"
            if study == "main":
                assert figure in readme, f"README.md lacks {study}/{path.parent.name} {init}: {figure}"
