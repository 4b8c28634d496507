"""This project's report (experiments/report.py, not part of the package): synthetic results
JSON → report.md (bold best, significance wording, paired Δ, template robustness,
out-of-distribution rows, provenance, rows scored on changed data) and valid PNG plots."""
from __future__ import annotations

import json
import logging
import random
import re
import statistics
import sys
from pathlib import Path

import pytest

from metaprompt.run.stats import mean_ci95

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
if str(EXPERIMENTS) not in sys.path:  # the report lives in experiments/, beside studies.py
    sys.path.insert(0, str(EXPERIMENTS))

from reporting import ReportError, build_report, main as report_main  # noqa: E402
from reporting.compare import paired  # noqa: E402
from reporting.entries import load_entry  # noqa: E402

SHA = {"huffpost": "a" * 64, "reuters": "b" * 64}
EPISODES = {("huffpost", 1): "1" * 64, ("huffpost", 5): "5" * 64, ("reuters", 1): "2" * 64}


def accuracies(mean: float, n: int, seed: int, spread: float = 0.1) -> list[float]:
    rng = random.Random(seed)
    return [min(1.0, max(0.0, round(mean + rng.uniform(-spread, spread), 4))) for _ in range(n)]


def row(init: str, accs: list[float]) -> dict:
    mean, ci = mean_ci95(accs)
    return {"init": init, "accuracy_mean": mean, "accuracy_ci95": ci, "accuracies_per_episode": accs,
            "seconds": 2.0 * len(accs), "seconds_per_episode": 2.0}


def results(dataset: str, k: int, pre: list[float], meta: list[float] | None, *, label: str = "",
            ref: list[float] | None = None, prompt: str = "embedding", verbalizer: str = "soft",
            template: int = 0, trained_on: str | None = None, method: str = "metaprompting",
            freeze: bool = True) -> dict:
    rows = [row("pretrained", pre)] + ([row("meta", meta)] if meta is not None else [])
    refs = []
    if ref is not None:
        mean, ci = mean_ci95(ref)
        refs = [{"name": "nearest_centroid_mean_pooled", "accuracy_mean": mean, "accuracy_ci95": ci,
                 "accuracies_per_episode": ref, "seconds": 1.0}]
    return {
        "label": label, "dataset": dataset, "n_way": 5, "k_shot": k, "n_query": 15, "n_episodes": len(pre),
        "episodes_sha256": EPISODES[(dataset, k)], "episodes_seed": 1234, "model": "minilm-offline", "seed": 1999,
        "commit": "0123456789abcdef0123", "method": method, "algorithm": "fomaml", "engine": "torch_func",
        "prompt": prompt, "verbalizer": verbalizer, "trainable_params": 1537,
        "adaptation": {"mode": "sgd", "steps": 5, "lr": 0.1},
        "meta_train_dataset": (trained_on or dataset) if meta is not None else None,
        "results": rows, "references": refs, "data_sha256": SHA[dataset], "peak_rss_mb": 987.4,
        "provenance": {"command": f"metaprompt eval runs/{dataset}-{k}", "commit": "0123456789abcdef0123",
                       "versions": {"python": "3.11", "torch": "2.13.0"}, "machine": {"cpus": 2}},
        "config": {"label": label, "data": {"dataset": dataset, "k_shot": k},
                   "model": {"name": "minilm-offline", "freeze_backbone": freeze, "max_length": 64},
                   "prompt": {"kind": prompt, "length": 4, "template_id": template, "pool_size": 8},
                   "verbalizer": {"kind": verbalizer}, "meta": {"algorithm": "fomaml"},
                   "peft": {"method": "none" if method == "metaprompting" else method}},
    }


def write_run(folder: Path, res: dict, curve: list[float] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(res))
    if curve is not None:
        points = [{"step": 50 * i, "episodes": 50 * i, "val_accuracy": v, "val_ci95": 0.03}
                  for i, v in enumerate(curve)]
        (folder / "train_summary.json").write_text(json.dumps({
            "episodes": 50 * (len(curve) - 1), "train_seconds": 754.0, "best_episodes": 100, "peak_rss_mb": 1234.6,
            "validation": points}))
        (folder / "run.json").write_text(json.dumps({"command": f"metaprompt train --out {folder.name}"}))
    return folder


@pytest.fixture
def tree(tmp_path):
    n = 200
    root = tmp_path / "results"
    pre_h = accuracies(0.30, n, 1)
    meta_h = [min(1.0, a + 0.25) for a in pre_h]  # a clear, paired win
    ref_h = accuracies(0.45, n, 3)
    write_run(root / "main" / "huffpost-1shot", results("huffpost", 1, pre_h, meta_h, ref=ref_h),
              curve=[0.30, 0.48, 0.52, 0.50])
    pre_r = accuracies(0.50, n, 4)
    meta_r = accuracies(0.50, n, 5)  # no real difference
    write_run(root / "main" / "reuters-1shot", results("reuters", 1, pre_r, meta_r, ref=accuracies(0.6, n, 6)),
              curve=[0.40, 0.42, 0.41])
    # frozen study (by label, in a flat folder): two configs on the same episodes -> bold best;
    # the pool row borrows the reference of main/huffpost-1shot (same episodes, data, model)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "prompt.json").write_text(json.dumps(results("huffpost", 1, pre_h, [a + 0.2 for a in pre_h],
                                                         label="frozen", ref=ref_h)))
    (flat / "pool.json").write_text(json.dumps(results("huffpost", 1, pre_h, [a + 0.1 for a in pre_h],
                                                       label="frozen", prompt="pool", verbalizer="repverb")))
    # templates: two templates of one config -> mean ± std; OOD: trained on reuters, tested on huffpost
    write_run(root / "templates" / "t0", results("huffpost", 5, accuracies(0.4, n, 7), accuracies(0.6, n, 8),
                                                 template=0), curve=[0.4, 0.5])
    write_run(root / "templates" / "t1", results("huffpost", 5, accuracies(0.3, n, 9), accuracies(0.58, n, 10),
                                                 template=1), curve=[0.3, 0.45])
    ood = results("huffpost", 1, pre_h, [a + 0.05 for a in pre_h], trained_on="reuters")
    ood["results"] = [r for r in ood["results"] if r["init"] == "meta"]  # `metaprompt eval --init meta`
    write_run(root / "ood" / "reuters-to-huffpost", ood)
    return {"root": root, "flat": flat, "pre_h": pre_h, "meta_h": meta_h, "pre_r": pre_r, "meta_r": meta_r}


def section(report: str, study: str) -> str:
    return report.split(f"\n## {study}\n", 1)[1].split("\n## ", 1)[0]


def table_row(report: str, *needles: str) -> str:
    for line in report.splitlines():
        if line.startswith("|") and all(n in line for n in needles):
            return line
    raise AssertionError(f"no table row with {needles}")


def test_report_tables_significance_and_plots(tree, tmp_path):
    out = tmp_path / "out"
    path = build_report([tree["root"], tree["flat"]], out, title="Synthetic")
    report = path.read_text()
    assert report.startswith("# Synthetic")
    for study in ("main", "frozen", "templates", "ood"):
        assert f"## {study}" in report

    # paired Δ = mean ± CI of per-episode differences, as in the accuracy table
    d = paired({"accuracies_per_episode": tree["meta_h"]}, {"accuracies_per_episode": tree["pre_h"]})
    expected = f"+{100 * d['mean']:.1f} ± {100 * d['ci']:.1f}"
    assert expected in table_row(section(report, "main"), "| huffpost |", "T0")
    # peak memory of the training process (train_summary.json) and of the evaluation (results.json)
    assert "| 1,235 / 987 |" in table_row(section(report, "main"), "| huffpost |", "T0")
    # significance wording: a clear win, and a row where the meta-learned init does not win
    assert "**wins**: 95% CIs do not overlap; paired Δ > 0" in report
    assert "does **not** win with non-overlapping 95% CIs (1 of 2 rows)" in report
    miss = next(line for line in report.splitlines() if line.startswith("- reuters 1-shot"))
    assert "95% CIs overlap" in miss and "paired Δ" in miss

    # bold best per column among rows on the same episodes: the prompt row beats the pool row
    frozen = section(report, "frozen")
    prompt_row = table_row(frozen, "| huffpost | 5-way 1-shot | embedding")
    pool_row = table_row(frozen, "| huffpost | 5-way 1-shot | pool")
    meta_prompt = f"{100 * mean_ci95([a + 0.2 for a in tree['pre_h']])[0]:.1f}"
    assert f"**{meta_prompt}" in prompt_row
    assert pool_row.count("**") == 2  # pretrained init ties (same accuracies): both bold
    # ...and a single row on its episodes gets no bold in its study table
    assert "**" not in table_row(section(report, "main"), "| reuters | 5-way 1-shot")
    # the pool row borrows the reference of an identical-episode row
    assert "†" in pool_row
    assert "| – / 987 |" in pool_row  # no train_summary.json beside it

    # template robustness and out-of-distribution sections
    assert "**Template robustness**" in report
    trow = table_row(report, "| huffpost | 5-shot", "| 2 |")
    per_template = [mean_ci95(accuracies(m, 200, seed))[0] for m, seed in ((0.4, 7), (0.3, 9))]
    expected = f"| {100 * statistics.mean(per_template):.1f} ± {100 * statistics.stdev(per_template):.1f} |"
    assert expected in trow  # pretrained init: mean ± std across the two templates
    assert "meta-trained on reuters" in report
    # the OOD row scored only its meta-learned init: the pretrained row of the same config on the
    # same episodes is lent to it (‡), so its verdict and paired Δ exist
    ood_row = table_row(section(report, "ood"), "| huffpost |", "meta-trained on reuters")
    assert "‡" in ood_row and "+5.0 ± 0.0" in ood_row
    ood = table_row(report, "| huffpost | 1-shot | reuters |")
    assert "`main/huffpost-1shot`" in ood or "`frozen/" in ood

    # provenance: commands, commits, models, data sha256
    assert "## Provenance" in report
    assert "metaprompt train --out huffpost-1shot" in report
    assert "metaprompt eval runs/huffpost-1" in report
    assert SHA["huffpost"] in report and SHA["reuters"] in report and "minilm-offline" in report
    assert "`0123456789ab`" in report

    # plots: referenced and valid images
    import matplotlib.image as mpimg

    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"curves_main.png", "bars_main.png", "bars_frozen.png", "curves_templates.png"} <= names
    assert "curves_ood.png" not in names  # an OOD curve is the source run's, not the test data's
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = mpimg.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert f"]({png.name})" in report


def test_report_command_and_errors(tree, tmp_path, capsys):
    run_dir = tree["root"] / "main" / "huffpost-1shot"
    assert report_main([str(run_dir), "--out", str(tmp_path / "one"), "--no-plots"]) == 0
    report = (tmp_path / "one" / "report.md").read_text()
    assert "1 result(s) in 1 study" in report and not list((tmp_path / "one").glob("*.png"))
    assert "The meta-learned init wins in all 1 rows" in report
    assert "by `python experiments/report.py " in report  # the command that made it

    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    assert report_main([str(tmp_path / "junk.json"), "--out", str(tmp_path / "x")]) == 2
    assert "not a results JSON" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on error
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no results JSON"):
        build_report([tmp_path / "empty"], tmp_path / "y")
    # --out a file, or below one: refused before anything is read or written
    (tmp_path / "a_file").write_text("x")
    assert report_main([str(run_dir), "--out", str(tmp_path / "a_file"), "--no-plots"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert report_main([str(run_dir), "--out", str(tmp_path / "a_file" / "r"), "--no-plots"]) == 2
    assert "a_file is a file, not a directory" in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_results_file_that_breaks_the_schema_is_refused_naming_the_field(tree, tmp_path, capsys):
    cell = tmp_path / "results" / "main" / "bad"
    bad = json.loads((tree["root"] / "main" / "huffpost-1shot" / "results.json").read_text())
    bad["results"][1]["accuracy_mean"] = "0.5"
    write_run(cell, bad)
    assert report_main([str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "results[1].accuracy_mean" in err and str(cell / "results.json") in err
    assert not (tmp_path / "out").exists()


def test_the_metaprompt_command_has_no_report(capsys):
    from metaprompt.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "x", "--out", "y"])
    assert exit_.value.code == 2 and "invalid choice: 'report'" in capsys.readouterr().err


def test_rows_scored_on_changed_data_get_their_own_warning_section(tmp_path):
    res = results("huffpost", 1, accuracies(0.4, 20, 1), accuracies(0.5, 20, 2), label="main")
    warning = "the data file /d/huffpost.jsonl has sha256 1234… but the run was trained on sha256 abcd…"
    res["data_change_warnings"] = [warning]
    write_run(tmp_path / "results" / "main" / "huffpost-1shot", res)
    report = build_report([tmp_path / "results"], tmp_path / "out", plots=False).read_text()
    assert f"## Warning: rows scored on changed data\n\n- main / huffpost-1shot: {warning}" in report


def test_one_test_episode_reports_no_ci_and_no_nan(tmp_path):
    res = results("huffpost", 1, [0.4], [0.6], label="main", ref=[0.5])
    assert res["results"][0]["accuracy_ci95"] is None  # as eval writes it: null, never NaN
    write_run(tmp_path / "results" / "main" / "huffpost-1shot", res, curve=[0.4, 0.5])
    report = build_report([tmp_path / "results"], tmp_path / "out").read_text()
    row = table_row(section(report, "main"), "| huffpost |")
    assert "| 40.0 | 60.0 | +20.0 | 50.0 |" in row and not re.search(r"\bnan\b", report, re.IGNORECASE)


def test_report_warns_when_a_run_was_evaluated_with_other_versions(tmp_path, caplog):
    cell = tmp_path / "study" / "cell"
    res = results("huffpost", 1, [0.4, 0.5], [0.6, 0.7], label="study")
    res["provenance"]["versions"] = {"torch": "2.13.0", "transformers": "5.24.0"}
    write_run(cell, res)
    (cell / "run.json").write_text(json.dumps({"versions": {"torch": "2.13.0", "transformers": "5.23.0"}}))
    with caplog.at_level(logging.WARNING):
        load_entry(cell / "results.json", tmp_path)
    assert "transformers 5.23.0 (now 5.24.0)" in caplog.text
    caplog.clear()
    (cell / "run.json").write_text(json.dumps({"versions": {"torch": "2.13.0", "transformers": "5.24.0"}}))
    with caplog.at_level(logging.WARNING):
        load_entry(cell / "results.json", tmp_path)
    assert "now" not in caplog.text


def test_label_config_key():
    from metaprompt.config import Config, ConfigError

    assert Config.load(None, ["label=main"]).label == "main"
    assert Config.load(None).label == ""
    with pytest.raises(ConfigError, match="label"):
        Config.load(None, ["label=a|b"])


def test_study_cells_and_dry_run(capsys, monkeypatch):
    """Every cell of both profiles has a valid config; the dry run prints commands and estimates."""
    import sys

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "experiments"))
    import run_study
    from studies import build_cells, by_id

    for profile in ("cpu", "paper"):
        cells = build_cells(profile)
        index = by_id(cells)
        assert {c.study for c in cells} == {"main", "frozen", "ood", "templates", "peft"}
        for cell in cells:
            if cell.source:
                assert cell.source in index, cell.id
            cfg = run_study.cell_config(cell, index)
            assert cfg.data.dataset == cell.dataset and cfg.data.k_shot == cell.k_shot, cell.id
            if cell.study == "templates" and cell.action == "train_eval":
                assert cfg.prompt.template_id in (1, 2)
            if profile == "cpu":
                # the peft cells (9 methods x 2 inits) score the first 100 of the same episodes
                assert cfg.eval.episodes >= (100 if cell.study == "peft" else 600), cell.id
                assert cfg.model.name == "minilm-offline", cell.id
            else:
                assert cfg.eval.episodes == 1000 and cfg.model.name == "bert-base-uncased", cell.id
    # the main cells choose each init's backbone step on 2 × 50 validation episodes: estimated too
    costs, cells = run_study.load_costs("cpu"), by_id(build_cells("cpu"))
    main = cells["main/huffpost-1shot"]
    if main.cost_key in costs:
        with_selection = run_study.estimate(main, cells, costs, [], 1)[0]
        without = run_study.estimate(main, cells, costs, ["eval.select_backbone_lr=[]"], 1)[0]
        assert with_selection - without == pytest.approx(2 * 2 * 50 * costs[main.cost_key]["eval"])
    env = run_study.default_env()
    if not all(run_study.dataset_available(d, env) for d in ("huffpost", "reuters", "20news")):
        del sys.modules["run_study"], sys.modules["studies"]
        pytest.skip("the dry run needs the data sets (../shared/data or $METAPROMPT_DATA)")
    assert run_study.main(["--study", "all", "--profile", "cpu", "--dry-run", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "metaprompt train --config configs/studies/cpu/main.yaml" in out
    assert "eval experiments/runs/cpu/ood/huffpost-to-reuters-1shot --init meta --set data.dataset=reuters" in out
    assert "estimated time:" in out and "wall with 2 jobs" in out
    del sys.modules["run_study"], sys.modules["studies"]


def test_report_names_the_backbone_step_chosen_per_init(tmp_path):
    n = 50
    res = results("reuters", 1, accuracies(0.8, n, 1), accuracies(0.9, n, 2), label="main", freeze=False)
    for r, step in zip(res["results"], (0.03, 0.01)):
        r["selected"] = {"inner_lr_backbone": step, "val_episodes": 50, "val_accuracy": {"0.01": 0.7, "0.03": 0.6}}
    write_run(tmp_path / "results" / "main" / "reuters-1shot", res, curve=[0.6, 0.7])
    build_report([tmp_path / "results"], tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    line = table_row(section(report, "main"), "reuters")
    assert "(step 0.03)" in line.split("|")[4] and "(step 0.01)" in line.split("|")[5]
    assert "chosen for that init on validation episodes" in section(report, "main")


def test_an_ood_row_borrows_the_pretrained_row_of_a_results_file_older_than_an_eval_option(tmp_path):
    """A results file written before ``eval.select_backbone_lr`` existed has no such key; a newer
    file with the option at its default (off) was scored the same way, so it may borrow that row."""
    n = 50
    pre, root = accuracies(0.4, n, 1), tmp_path / "results"
    write_run(root / "frozen" / "reuters-1shot", results("reuters", 1, pre, accuracies(0.9, n, 2), label="frozen"))
    for name, candidates in (("huffpost-to-reuters", []), ("selecting", [0.01, 0.03])):
        ood = results("reuters", 1, pre, accuracies(0.85, n, 3), label="ood", trained_on="huffpost")
        ood["results"] = [r for r in ood["results"] if r["init"] == "meta"]
        ood["config"]["eval"] = {"seed": 1234, "select_backbone_lr": candidates, "select_episodes": 50}
        write_run(root / "ood" / name, ood)
    build_report([root], tmp_path / "out")
    provenance = section((tmp_path / "out" / "report.md").read_text(), "Provenance")
    assert "pretrained init: `frozen/reuters-1shot`" in table_row(provenance, "| ood/huffpost-to-reuters |")
    # a different eval setting (the selection on) changes the pretrained score: nothing is borrowed
    assert "pretrained init:" not in table_row(provenance, "| ood/selecting |")


def baseline_cell(accs: dict[str, list[float]], *, sha: str = EPISODES[("huffpost", 1)],
                  truncation: str = "40 word pieces of text + [CLS]/[SEP]") -> dict:
    """A per-cell JSON as experiments/practitioner_baselines.py writes it."""
    rows = []
    for name, values in accs.items():
        mean, ci = mean_ci95(values)
        rows.append({"baseline": name, "method": name.split(" + ")[0], "label_words": " + label words" in name,
                     "settings": {}, "accuracy_mean": mean, "accuracy_ci95": ci, "accuracies_per_episode": values,
                     "seconds": 3.0})
    return {"cell": "huffpost-1shot-prompt", "dataset": "huffpost", "n_way": 5, "k_shot": 1, "n_query": 15,
            "n_episodes": 4, "episodes_sha256": sha, "model": "minilm-offline", "data_sha256": SHA["huffpost"],
            "truncation": truncation, "baselines": rows,
            "provenance": {"command": "practitioner_baselines.py --cells huffpost-1shot-prompt", "commit": "f" * 40}}


def baseline_results(method: str, words: bool, accs: list[float], sha: str) -> dict:
    """A results file as `metaprompt baseline --method M` writes it: the score is a reference row."""
    res = results("huffpost", 1, accs, None, label="baselines")
    mean, ci = mean_ci95(accs)
    res.update({"method": f"baseline:{method}", "episodes_sha256": sha, "results": [],
                "adaptation": {"mode": method, "settings": {}, "selected": None, "label_words": words},
                "references": [{"name": method + ("+label_words" if words else ""), "accuracy_mean": mean,
                                "accuracy_ci95": ci, "accuracies_per_episode": accs, "seconds": 1.0}]})
    res["config"]["data"]["max_text_tokens"] = 40
    return res


def test_practitioner_baselines_on_the_same_episodes_are_paired_and_the_strongest_named(tmp_path):
    meta = [0.6, 0.8, 0.4, 1.0]
    res = results("huffpost", 1, [0.2, 0.4, 0.2, 0.4], meta, label="frozen")
    res["config"]["data"]["max_text_tokens"] = 40
    write_run(tmp_path / "results" / "frozen" / "huffpost-1shot", res)
    folder = tmp_path / "baselines"
    folder.mkdir()
    (folder / "huffpost-1shot-prompt.json").write_text(json.dumps(baseline_cell({
        "centroid": [0.4, 0.8, 0.6, 0.6],  # mean 60.0
        "linear_probe + label words": [0.8, 0.8, 0.6, 0.8]})))  # mean 75.0: the strongest
    # the same episodes, but the texts cut at 64 word pieces: not paired
    (folder / "longer.json").write_text(json.dumps(baseline_cell({"linear_probe": [1.0, 1.0, 1.0, 1.0]},
                                                                 truncation="64 word pieces of text")))
    (folder / "README.md").write_text("not JSON")
    # results files of `metaprompt baseline`, among the inputs: one on the same episodes, one on others
    write_run(tmp_path / "results" / "baselines" / "centroid-words",
              baseline_results("centroid", True, [0.6, 0.6, 0.6, 0.6], EPISODES[("huffpost", 1)]))
    write_run(tmp_path / "results" / "baselines" / "setfit",
              baseline_results("setfit", False, [0.9, 0.9, 0.9, 0.9], "9" * 64))
    report = build_report([tmp_path / "results"], tmp_path / "out", plots=False, baselines=[folder]).read_text()
    assert "1 result(s) in 1 study" in report  # a baseline's results file is no row of a study

    # by hand: meta − centroid = [.2, 0, -.2, .4]: mean 10.0, s = √(.2/3), CI 1.96·s/2 = 25.3; 2 better, 1 worse
    #          meta − centroid + label words (a results file, all 0.6) = [0, .2, -.2, .4]: the same
    #          meta − linear_probe + label words = [-.2, 0, -.2, .2]: mean -5.0, s = √(.11/3), CI 18.8; 1 / 2
    best = table_row(section(report, "frozen"), "| huffpost | 1-shot", "label words:")
    assert "| linear_probe + label words: 75.0 ± " in best and best.endswith("| -5.0 ± 18.8 (1 / 2) |")
    cell = section(report, "Practitioner baselines")
    assert "Strongest baseline: **linear_probe + label words** (75.0 ± " in cell
    header = next(line for line in cell.splitlines() if line.startswith("| study |"))
    assert header == ("| study | config | meta-learned init | Δ meta − centroid | "
                      "Δ meta − centroid + label words | Δ meta − linear_probe + label words (strongest) |")
    assert table_row(cell, "| frozen |").endswith(
        "| 70.0 ± 25.3 | +10.0 ± 25.3 (2 / 1) | +10.0 ± 25.3 (2 / 1) | -5.0 ± 18.8 (1 / 2) |")
    assert "| **linear_probe + label words** | 75.0 ± " in cell
    # not paired, and said so: other episodes (setfit), another truncation (linear_probe at 64)
    missing = cell.split("Not paired with any row", 1)[1]
    assert "- setfit (huffpost 5-way 1-shot, 4 episodes, sha256 `999999999999`" in missing
    assert "- linear_probe (huffpost 5-way 1-shot, 4 episodes, sha256 `111111111111`, minilm-offline, 64 word" \
           in missing
    assert "Δ meta − setfit" not in report and "Δ meta − linear_probe |" not in report
    assert "`practitioner_baselines.py --cells huffpost-1shot-prompt`" in cell


def test_baselines_command_line_options(tree, tmp_path, capsys):
    run_dir = tree["root"] / "main" / "huffpost-1shot"
    (tmp_path / "none").mkdir()
    assert report_main([str(run_dir), "--out", str(tmp_path / "a"), "--no-plots", "--baselines",
                        str(tmp_path / "none")]) == 2
    assert "no per-cell baselines JSON" in capsys.readouterr().err
    # the committed baselines are of other episodes than the synthetic rows: listed, never paired
    assert report_main([str(run_dir), "--out", str(tmp_path / "b"), "--no-plots"]) == 0
    report = (tmp_path / "b" / "report.md").read_text()
    assert "Not paired with any row" in report and "Strongest baseline" not in report
    assert report_main([str(run_dir), "--out", str(tmp_path / "c"), "--no-plots", "--no-baselines"]) == 0
    assert "Practitioner baselines" not in (tmp_path / "c" / "report.md").read_text()
