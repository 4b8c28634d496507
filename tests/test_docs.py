"""README.md and docs/ say what this repository holds and what the code does: the files they
cite exist here, the demo config's differences from the defaults and the commands that take
``--set`` are the ones listed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from metaprompt.config import Config, flat

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("metaprompt/", "episodes/", "configs/", "experiments/", "docs/", "tests/")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_docs_cite_only_files_of_this_repository(doc):
    text = _text(doc)
    assert "shared/reference" not in text and "PROVENANCE.md" not in text
    for match in re.finditer(r"\]\(([^)#]+)(#[^)]*)?\)", text):  # Markdown links
        if not match.group(1).startswith("http"):
            assert (doc.parent / match.group(1)).exists(), f"{doc.name} links to {match.group(1)}"
    for match in re.finditer(r"`([^`\s]+)`", text):  # `paths/in/code/spans`
        path = match.group(1).rstrip(".,:;").split("::")[0]
        if not path.startswith(TOP) or any(c in path for c in "<>*{}…|[]") or path.startswith("experiments/runs"):
            continue  # placeholders, globs and git-ignored run folders
        assert (ROOT / path).exists(), f"{doc.name} cites {path}, which this repository does not have"


def test_the_demo_is_the_huffpost_1shot_recipe_setting_for_setting():
    demo = Config.load(ROOT / "configs" / "demo.yaml").to_dict()
    assert demo == Config.load(ROOT / "configs" / "recipes" / "huffpost-1shot.yaml").to_dict()


def test_readme_lists_how_the_demo_config_differs_from_the_defaults():
    defaults = flat(Config.load(None).to_dict())
    demo = flat(Config.load(ROOT / "configs" / "demo.yaml").to_dict())
    differing = {key: (demo[key], defaults[key]) for key in defaults if demo[key] != defaults[key]}
    readme = " ".join(_text(ROOT / "README.md").split())
    paragraph = readme.split("`configs/demo.yaml` is what `make demo` runs", 1)[1].split("The keys most often", 1)[0]
    assert paragraph.count("(default ") == len(differing)
    for key, (ours, default) in differing.items():
        assert f"`{key}` {ours} (default {default})" in paragraph, key


def test_readme_names_the_commands_that_take_set():
    from metaprompt.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices

    def takes_set(sub) -> bool:
        if any("--set" in a.option_strings for a in sub._actions):
            return True
        nested = [a for a in sub._actions if getattr(a, "choices", None) and isinstance(a.choices, dict)]
        return bool(nested) and all(takes_set(p) for a in nested for p in a.choices.values())

    with_set = {name for name, sub in commands.items() if takes_set(sub)}
    readme = " ".join(_text(ROOT / "README.md").split())
    listed = readme.split("take `--set key=value`", 1)[0].rsplit("\n", 1)[-1].split("## The command line", 1)[1]
    named = set(re.findall(r"`([a-z]+)`", listed))
    ignored = {"export"} if "`export` accepts `--set` but does not use it" in readme else set()
    assert named == with_set - ignored
    assert ignored <= with_set
