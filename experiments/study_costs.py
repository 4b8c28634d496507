"""Measure what the cells of a study cost on this machine: seconds per meta-training episode
(per phase of the algorithm), per evaluation episode and per reference episode.

`experiments/run_study.py --dry-run` turns these numbers into an estimate per cell. Timings are
CPU seconds of the process (``time.process_time``) with 1 torch thread: on a shared machine they
are what an uncontended core would take, where wall time depends on the neighbours (also
recorded, as ``wall``). `run_study.py` scales them by THREADS_2 for 2 threads.

    python experiments/study_costs.py --profile cpu                    # every kind of cell
    python experiments/study_costs.py --profile cpu --only 'main/*'   # some (keys are merged into the file)

Writes experiments/results/<profile>/costs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from run_study import cell_config  # noqa: E402
from studies import build_cells, by_id  # noqa: E402


def cell_profile(cell) -> str:
    return "paper" if "/paper/" in str(cell.config) else "cpu"


def phases(cfg) -> dict[str, int]:
    """Outer step (of a run of cfg.train.episodes) at which each phase of the algorithm is seen."""
    m, total = cfg.meta, cfg.train.episodes
    if m.algorithm != "maml++":
        return {"train": 0}
    out = {}
    if m.multi_step_loss:
        out["train_msl"] = 0  # multi-step loss (query loss after every inner step)
    out["train_fo"] = min(m.multi_step_loss_episodes if m.multi_step_loss else 0, total - 1)
    if m.first_order_fraction < 1.0:
        out["train_so"] = total - 1
    return out


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def measure(cell, reps: int, eval_reps: int) -> dict:
    import torch

    from metaprompt.meta.algorithms import build_algorithm
    from metaprompt.meta.engines import build_engine
    from metaprompt.run.adaptation import adapt_and_score
    from metaprompt.run.reference import centroid_reference
    from metaprompt.run.setup import build_setup, fixed_episodes
    from metaprompt.run.train import make_optimizer

    cfg = cell_config(cell, by_id(build_cells(cell_profile(cell))), ["threads=1"])
    started = _clock()
    setup = build_setup(cfg)
    out = {"setup_s": time.process_time() - started[0]}
    wall = {}
    classifier = setup.classifier
    algorithm = build_algorithm(cfg.meta, build_engine(cfg.meta.engine), classifier)
    params = classifier.init_params()
    params.update(algorithm.extra_params(params))
    optimizer = make_optimizer(cfg, params)
    sampler = setup.sampler("train", cfg.seed)
    total = cfg.train.episodes
    index = 0
    for phase, step in phases(cfg).items():
        times, walls = [], []
        for rep in range(reps + 1):  # the first is a warm-up
            task = setup.task(sampler.episode(index), index)
            index += 1
            t0 = _clock()
            for p in params.values():
                p.grad = None
            algorithm.accumulate(params, task, step, total)
            torch.nn.utils.clip_grad_norm_([p for p in params.values() if p.grad is not None], 1.0)
            optimizer.step()
            if rep:
                times.append(time.process_time() - t0[0])
                walls.append(time.perf_counter() - t0[1])
        out[phase] = sum(times) / len(times)
        wall[phase] = sum(walls) / len(walls)
    _, episodes = fixed_episodes(setup, "test", eval_reps + 1, cfg.eval.seed)
    tasks = list(setup.tasks(episodes))
    init = classifier.init_params()
    adapt_and_score(algorithm, init, tasks[0], cfg.eval)  # warm-up
    t0 = _clock()
    for task in tasks[1:]:
        adapt_and_score(algorithm, init, task, cfg.eval)
    out["eval"] = (time.process_time() - t0[0]) / eval_reps
    wall["eval"] = (time.perf_counter() - t0[1]) / eval_reps
    t0 = _clock()
    centroid_reference(setup, episodes)
    out["reference"] = (time.process_time() - t0[0]) / len(episodes)
    wall["reference"] = (time.perf_counter() - t0[1]) / len(episodes)
    out["wall"] = wall
    out["trainable_params"] = classifier.count(classifier.init_params())["total"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", help="comma-separated globs of cost keys, e.g. 'main/*,frozen-*/huffpost/1'")
    parser.add_argument("--reps", type=int, default=2, help="timed training episodes per phase (after a warm-up)")
    parser.add_argument("--eval-reps", type=int, default=4, help="timed evaluation episodes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import fnmatch

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    from metaprompt.run.provenance import provenance
    from episodes.data import data_file_names
    from episodes.paths import resolve_data_dir

    def present(name):
        return any((d / f).is_file() for d in resolve_data_dir(None) for f in data_file_names(name))

    out_path = args.out or ROOT / "experiments" / "results" / args.profile / "costs.json"
    data = json.loads(out_path.read_text()) if out_path.is_file() else {"costs": {}}
    seen = set()
    for cell in build_cells(args.profile):
        if cell.action not in ("train_eval", "baseline") or cell.cost_key in seen:
            continue
        seen.add(cell.cost_key)
        if args.only and not any(fnmatch.fnmatch(cell.cost_key, p) for p in args.only.split(",")):
            continue
        if not present(cell.dataset):
            print(f"{cell.cost_key}: skipped, data set {cell.dataset} is not available here", flush=True)
            continue
        result = measure(cell, args.reps, args.eval_reps)
        data["costs"][cell.cost_key] = result
        print(cell.cost_key, json.dumps(result, default=lambda v: round(v, 3)), flush=True)
        data.update({"threads": 1, "note": "CPU seconds per episode (process time) with 1 torch thread; 'wall': "
                                           "wall seconds on the shared machine; 2 threads: x THREADS_2 in "
                                           "run_study.py",
                     "provenance": provenance()})
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
