"""Safe loading: weights only through safetensors, configs through yaml.safe_load, remote code
only when the user asks for it, and no pickle anywhere (sources scanned, and a run watched)."""
from __future__ import annotations

import ast
import pickle
import re
import tokenize
from pathlib import Path

import pytest
import torch

from metaprompt.cli import main
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("metaprompt", "episodes", "experiments")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib", "pickletools"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}

# (file, enclosing function) of from_pretrained calls that need not pass trust_remote_code, and why.
# transformers' own default is False, so these never run remote code; they only do not honour a
# user's model.trust_remote_code=true (a model with custom code would fail to load there).
FROM_PRETRAINED_ALLOWED = {
    ("metaprompt/run/export/__init__.py", "_base_model_facts"): "reads config.json only (default: no remote code)",
    ("metaprompt/run/export/verify.py", "verify_peft_files"):
        "re-loads the run's own backbone, which load_backbone checked",
    ("metaprompt/load.py", "check_base_model"): "reads config.json only (default: no remote code)",
}


def _sources() -> list[Path]:
    files = [p for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 20, files
    return files


def _name(node: ast.AST) -> str:
    """Dotted name of a call target: torch.load, yaml.load, eval, …"""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _constant(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _findings(path: Path, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    found = []
    functions = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                functions.setdefault(id(child), node.name)  # the outermost enclosing function

    def hit(node: ast.AST, what: str) -> None:
        found.append(f"{rel}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    hit(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in PICKLE_MODULES:
                hit(node, f"imports from {node.module}")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                hit(node, "imports torch.load")
            unsafe_yaml = ("load", "unsafe_load", "full_load", "load_all")
            if node.module == "yaml" and any(a.name in unsafe_yaml for a in node.names):
                hit(node, "imports an unsafe yaml loader")
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if name in ("eval", "exec", "compile", "__import__"):
                hit(node, f"calls {name}()")
            if name == "torch.load" or name.endswith(".torch_load"):
                hit(node, "calls torch.load (a pickle); use safetensors")
            if name.split(".")[0] in PICKLE_MODULES:
                hit(node, f"calls {name}")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
                hit(node, f"calls {name}")
            if name in ("yaml.load", "yaml.load_all"):
                loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
                if _name(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                    hit(node, f"calls {name} without a safe Loader; use yaml.safe_load")
            if name.endswith("read_pickle"):
                hit(node, f"calls {name}")
            if _constant(keywords.get("trust_remote_code"), True):
                hit(node, "sets trust_remote_code=True (only the user's config may)")
            if _constant(keywords.get("allow_pickle"), True):
                hit(node, "sets allow_pickle=True")
            if _constant(keywords.get("weights_only"), False):
                hit(node, "sets weights_only=False")
            if _constant(keywords.get("use_safetensors"), False):
                hit(node, "sets use_safetensors=False")
            if (name.endswith("from_pretrained") and rel.startswith(("metaprompt/", "episodes/"))
                    and "trust_remote_code" not in keywords
                    and not any(k.arg is None for k in node.keywords)  # **kwargs: built above, not visible here
                    and (rel, functions.get(id(node))) not in FROM_PRETRAINED_ALLOWED):
                hit(node, f"calls {name} without passing trust_remote_code (pass cfg.model.trust_remote_code)")
    return found


def _code_only(path: Path) -> str:
    """The source without comments and string literals (docstrings may say "no pickle")."""
    kept = []
    with open(path, "rb") as handle:
        for token in tokenize.tokenize(handle.readline):
            if token.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.ENCODING):
                kept.append(token.string)
    return " ".join(kept)


def test_sources_use_no_pickle_unsafe_yaml_eval_or_remote_code():
    found = [f for path in _sources() for f in _findings(path)]
    assert not found, "unsafe loading in the sources:\n" + "\n".join(found)


def test_no_pickle_words_in_code():
    # A second, dumber net under the AST scan: the bare words in code (not in comments or strings).
    pattern = re.compile(r"\b(pickle|cPickle|dill|cloudpickle|joblib|torch \. load|unsafe_load|full_load)\b"
                         r"|(?<![.\w] )\b(eval|exec) \(")
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _sources() for m in pattern.finditer(_code_only(p))]
    assert not found, found


def test_the_scanner_catches_what_it_should(tmp_path):
    bad = tmp_path / "metaprompt" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import pickle\nimport torch, yaml\nfrom transformers import AutoModel\n"
        "def f(p):\n"
        "    torch.load(p)\n    yaml.load(p)\n    yaml.load(p, Loader=yaml.SafeLoader)\n    eval('1')\n"
        "    AutoModel.from_pretrained(p, trust_remote_code=True)\n    AutoModel.from_pretrained(p)\n"
        "    model.eval()\n")
    found = "\n".join(_findings(bad, root=tmp_path))
    for expected in ("bad.py:1: imports pickle", "bad.py:5: calls torch.load", "bad.py:6: calls yaml.load without",
                     "bad.py:8: calls eval()", "bad.py:9: sets trust_remote_code=True",
                     "bad.py:10: calls AutoModel.from_pretrained without passing trust_remote_code"):
        assert expected in found, found
    assert "bad.py:7:" not in found and "bad.py:11:" not in found


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_is_exactly_what_the_config_says(tiny_data, tiny_models, monkeypatch, trust):
    import transformers

    from metaprompt.config import Config
    from metaprompt.run.setup import build_setup

    model = tiny_models("bert")  # built before the loaders are watched
    seen, depth = [], [0]
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModel,
                transformers.AutoModelForMaskedLM):
        real = cls.from_pretrained.__func__

        def record(klass, *args, _real=real, _name=cls.__name__, **kwargs):
            if depth[0] == 0:  # metaprompt's own calls, not the loaders' calls of each other
                seen.append((_name, kwargs.get("trust_remote_code", "not passed"), kwargs.get("use_safetensors")))
            depth[0] += 1
            try:
                return _real(klass, *args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(cls, "from_pretrained", classmethod(record))
    cfg = Config.load(None, tiny_overrides(tiny_data, model, **{"model.trust_remote_code": trust}))
    threads = torch.get_num_threads()
    build_setup(cfg)
    torch.set_num_threads(threads)
    names = {name for name, _, _ in seen}
    assert {"AutoConfig", "AutoTokenizer", "AutoModelForMaskedLM"} <= names, seen
    assert all(value is trust for _, value, _ in seen), seen
    assert all(safe is True for name, _, safe in seen if name.startswith("AutoModel")), seen


def test_a_whole_run_unpickles_nothing(tmp_path, tiny_data, tiny_models, monkeypatch):
    """train → eval → export with every unpickling entry point booby-trapped."""
    def trap(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, trap)
    run = tmp_path / "run"
    sets = []
    for item in tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"train.episodes": 2}):
        sets += ["--set", item]
    threads = torch.get_num_threads()
    assert main(["train", "--out", str(run), *sets]) == 0
    assert main(["train", "--resume", str(run)]) == 0  # reads the checkpoint back
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    torch.set_num_threads(threads)
    written = sorted(p.name for p in run.iterdir())
    assert not [n for n in written if n.endswith((".pt", ".pth", ".bin", ".pkl", ".pickle"))], written
