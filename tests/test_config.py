"""Typed config: YAML, --set overrides, validation with suggestions."""
import pytest

from metaprompt.config import Config, ConfigError, all_keys


def test_defaults_and_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("meta:\n  inner_lr: 1e-3\n  learn: [prompt]\ndata:\n  k_shot: 5\n")
    cfg = Config.load(path, ["meta.inner_steps=3", "model.freeze_backbone=false", "train.lr=5e-4",
                             "data.test_episodes_file=null", "meta.learn=prompt,verbalizer"])
    assert cfg.meta.inner_lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string: typed by the field
    assert cfg.meta.inner_steps == 3 and cfg.data.k_shot == 5
    assert cfg.model.freeze_backbone is False and cfg.train.lr == pytest.approx(5e-4)
    assert cfg.meta.learn == ["prompt", "verbalizer"]
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override,message", [
    ("meta.inner_lrr=0.1", "Did you mean 'meta.inner_lr'"),
    ("meta.algorithm=mamll", "Did you mean 'maml'"),
    ("meta.inner_lr=-1", "meta.inner_lr"),
    ("meta.inner_lr=0", "meta.inner_lr"),
    ("meta.inner_steps=0", "meta.inner_steps"),
    ("meta.inner_steps=2.5", "expected int"),
    ("data.n_way=1", "data.n_way"),
    ("data.dataset=huffpots", "Did you mean 'huffpost'"),
    ("model.freeze_backbone=maybe", "expected bool"),
    ("prompt.template={text} [MASK] topic [MASK]", "[MASK]"),
    ("train.lr=nan", "train.lr"),
    ("meta.engine=jax", "torch_func"),
    ("inner_lr", "key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        Config.load(None, [override])
    assert message in str(err.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  episods: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.episods.*Did you mean 'train.episodes'"):
        Config.load(path)
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        Config.load(path)
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.yaml")


def test_every_contract_key_is_reachable():
    keys = set(all_keys())
    for key in ("data.dataset", "data.path", "data.splits", "data.dir", "data.n_way", "data.k_shot", "data.n_query",
                "model.name", "model.freeze_backbone", "meta.algorithm", "meta.inner_steps", "meta.inner_lr",
                "train.episodes", "eval.episodes", "seed"):
        assert key in keys


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml"))
    configs = [c for c in configs if "templates" not in c.parts]
    assert configs
    for path in configs:
        Config.load(path)
