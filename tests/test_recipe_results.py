"""The committed comparison with the practitioner baselines: the recipe's rows were scored on the
baselines' episodes with the committed recipe config, and the README quotes them as committed."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

from metaprompt.config import Config, without_runtime_keys

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "experiments" / "results" / "recipes"
BASELINES = ROOT / "experiments" / "results" / "baselines"
CELLS = sorted(RECIPES.glob("*-prompt.json"))


@pytest.mark.parametrize("path", CELLS, ids=[p.stem for p in CELLS])
def test_a_recipe_row_pairs_with_its_cells_baselines_and_config(path):
    res = json.loads(path.read_text())
    base = json.loads((BASELINES / f"{res['cell']}.json").read_text())
    assert res["episodes_sha256"] == base["episodes_sha256"]
    assert len(res["recipe"]["accuracies_per_episode"]) == base["n_episodes"] == res["n_episodes"]
    recipe = ROOT / "configs" / "recipes" / f"{res['cell'].rsplit('-', 1)[0]}.yaml"
    committed = Config.from_dict(yaml.safe_load(recipe.read_text()), source=str(recipe))
    scored = Config.from_dict(res["recipe"]["config"], source=str(path))
    # a run pins the data directory of the machine it ran on (data.dir); everything else is the recipe
    scored, committed = (without_runtime_keys(c.to_dict()) for c in (scored, committed))
    for config in (scored, committed):
        config["data"].pop("dir")
    assert scored == committed


def test_the_readme_quotes_the_committed_comparison():
    if not (RECIPES / "README.md").is_file():
        pytest.skip("no recipe results committed")
    readme = (ROOT / "README.md").read_text()
    # each committed table (header, separator and every row, consecutive lines) is quoted whole
    lines = (RECIPES / "README.md").read_text().splitlines()
    tables = ["\n".join(group) for is_table, group in itertools.groupby(lines, lambda line: line.startswith("|"))
              if is_table]
    assert len(tables) >= 1
    for table in tables:
        assert table in readme, f"README.md does not quote this committed table whole:\n{table}"


def test_setfit_rows_pair_the_recipe_on_the_first_episodes_setfit_scored():
    path = RECIPES / "setfit.json"
    if not path.is_file():
        pytest.skip("no SetFit comparison committed")
    for row in json.loads(path.read_text()):
        scored = json.loads((ROOT / row["source"]).read_text())
        cell = json.loads((RECIPES / f"{row['cell']}.json").read_text())
        n = scored["n_episodes"]
        assert row["n_episodes"] == n < cell["n_episodes"]
        setfit = scored["references"][0]["accuracies_per_episode"]
        ours = cell["recipe"]["accuracies_per_episode"][:n]
        assert scored["adaptation"]["label_words"] is True
        assert row["setfit_accuracy"][0] == pytest.approx(sum(setfit) / n)
        assert row["recipe_accuracy"][0] == pytest.approx(sum(ours) / n)
        assert row["recipe_minus_setfit"]["mean"] == pytest.approx(sum(a - b for a, b in zip(ours, setfit)) / n)
