"""eval.select_backbone_lr: each init's backbone step at meta-test is chosen on validation episodes."""
import pytest

from metaprompt.config import Config, ConfigError
from tests.conftest import tiny_overrides


def _trained_run(tmp_path, tiny_data, tiny_models, **extra):
    from metaprompt.run.train import train

    run = tmp_path / "run"
    train(Config.load(None, tiny_overrides(tiny_data, tiny_models("bert"), **{
        "model.freeze_backbone": False, "meta.inner_lr_backbone": 0.01, "train.episodes": 2,
        "eval.episodes": 2, "eval.reference": False, **extra})), run)
    return run


@pytest.mark.slow
def test_each_init_adapts_with_the_step_that_wins_on_validation(tmp_path, tiny_data, tiny_models, monkeypatch):
    import metaprompt.run.evaluate as evaluation

    run = _trained_run(tmp_path, tiny_data, tiny_models)
    val_classes = set(evaluation.build_setup(Config.load(run / "config.yaml")).dataset.splits.val)
    real, seen = evaluation.adapt_and_score, []

    def scored_by_step(algorithm, params, task, cfg):
        step = algorithm.cfg.inner_lr_backbone
        validation = set(task.classes) <= val_classes
        seen.append((step, validation))
        real(algorithm, params, task, cfg)
        # on validation, 0.002 wins for the pretrained init and 0.05 for the meta-learned one
        wins = 0.05 if params is meta else 0.002
        return 1.0 if not validation or step == wins else 0.5

    meta = evaluation.load_meta_params(run, evaluation.build_setup(Config.load(run / "config.yaml")))[0]
    monkeypatch.setattr(evaluation, "load_meta_params", lambda *a: (meta, {}))
    monkeypatch.setattr(evaluation, "adapt_and_score", scored_by_step)
    results = evaluation.evaluate(run, ["eval.select_backbone_lr=0.002,0.05", "eval.select_episodes=3"])
    pretrained, learned = results["results"]
    assert pretrained["selected"]["inner_lr_backbone"] == 0.002
    assert learned["selected"]["inner_lr_backbone"] == 0.05
    assert pretrained["selected"]["val_accuracy"] == {"0.002": 1.0, "0.05": 0.5}
    assert learned["selected"]["val_episodes"] == 3
    # 3 validation episodes per candidate, then the 2 test episodes with the chosen step, per init
    assert seen == [(0.002, True)] * 3 + [(0.05, True)] * 3 + [(0.002, False)] * 2 + \
        [(0.002, True)] * 3 + [(0.05, True)] * 3 + [(0.05, False)] * 2


@pytest.mark.slow
def test_selection_runs_on_the_real_inner_loop(tmp_path, tiny_data, tiny_models):
    from metaprompt.run.evaluate import evaluate

    run = _trained_run(tmp_path, tiny_data, tiny_models)
    results = evaluate(run, ["eval.select_backbone_lr=[0.001, 0.01]", "eval.select_episodes=2"])
    for row in results["results"]:
        assert row["selected"]["inner_lr_backbone"] in (0.001, 0.01)
        assert set(row["selected"]["val_accuracy"]) == {"0.001", "0.01"}
        assert len(row["accuracies_per_episode"]) == 2


@pytest.mark.parametrize("extra,message", [
    ({"model.freeze_backbone": True}, "nothing to choose"),
    ({"model.freeze_backbone": False, "eval.lr": 0.1}, "no eval.lr"),
    ({"model.freeze_backbone": False, "meta.algorithm": "maml++"}, "no learned steps"),
    ({"model.freeze_backbone": False, "eval.adapt": "adamw"}, "eval.adapt=sgd"),
    ({"model.freeze_backbone": False, "eval.select_backbone_lr": "0.01,-1"}, "finite number > 0"),
])
def test_selection_refuses_settings_it_cannot_serve(tiny_data, tiny_models, extra, message):
    sets = tiny_overrides(tiny_data, tiny_models("bert"), **{"eval.select_backbone_lr": "0.01,0.03", **extra})
    with pytest.raises(ConfigError, match=message):
        Config.load(None, sets)


@pytest.mark.slow
def test_a_resumed_evaluation_keeps_the_chosen_step(tmp_path, tiny_data, tiny_models, monkeypatch):
    """Killed after the pretrained init's selection and one test episode, the evaluation goes on
    with the recorded step: no validation episode of that init is adapted again."""
    import metaprompt.run.evaluate as evaluation

    run = _trained_run(tmp_path, tiny_data, tiny_models)
    sets = ["eval.select_backbone_lr=0.002,0.05", "eval.select_episodes=2"]
    full = evaluation.evaluate(run, sets)
    val_classes = set(evaluation.build_setup(Config.load(run / "config.yaml")).dataset.splits.val)
    real, seen = evaluation.adapt_and_score, []

    class Killed(Exception):
        pass

    def dies_after(limit):
        def adapt_and_score(algorithm, params, task, cfg):
            if len(seen) == limit:
                raise Killed
            seen.append((algorithm.cfg.inner_lr_backbone, set(task.classes) <= val_classes))
            return real(algorithm, params, task, cfg)
        return adapt_and_score

    monkeypatch.setattr(evaluation, "adapt_and_score", dies_after(2 * 2 + 1))  # 2 candidates × 2 val, 1 test
    with pytest.raises(Killed):
        evaluation.evaluate(run, sets)
    seen.clear()
    monkeypatch.setattr(evaluation, "adapt_and_score", dies_after(99))
    resumed = evaluation.evaluate(run, sets)
    step = full["results"][0]["selected"]["inner_lr_backbone"]
    assert seen[0] == (step, False)  # the pretrained init's second test episode comes first
    assert sum(validation for _, validation in seen) == 2 * 2  # only the meta-learned init selects
    assert [r["episodes_resumed"] for r in resumed["results"]] == [1, 0]
    for a, b in zip(full["results"], resumed["results"]):
        assert a["selected"] == b["selected"]
        assert a["accuracies_per_episode"] == b["accuracies_per_episode"]
