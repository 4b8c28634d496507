"""``metaprompt baseline``: a PEFT method or a practitioner's baseline, scored on the same fixed
test episodes as everything else.

    metaprompt baseline --method lora --config configs/demo.yaml --out runs/lora [--init pretrained|meta|both]
    metaprompt baseline --method centroid --config configs/demo.yaml --out runs/centroid [--set baseline.label_words=false]

The practitioner's baselines (``centroid``, ``linear_probe``, ``ridge``, ``setfit``:
:mod:`metaprompt.baselines`) need no training; see :mod:`metaprompt.run.practitioner`. Killed, the
same command goes on from the next unscored episode (its ``--out`` keeps an episode log). For PEFT methods:

Precedence of settings: the ``--config`` file (or the defaults), then the method's own
defaults (its prompt settings and learning rates: ``metaprompt.tuners.<method>.METHOD.defaults``,
also in ``configs/baselines/<method>.yaml``), then ``--set``. ``--init pretrained`` adapts the
method's pretrained init on each test episode and skips meta-training; ``meta`` and ``both``
meta-train the method's parameters first (``meta.algorithm``: maml, fomaml, maml++, reptile).
"""
from __future__ import annotations

import argparse
from pathlib import Path

INITS = {"pretrained": ("pretrained",), "meta": ("meta",), "both": ("pretrained", "meta")}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("baseline", help="score a PEFT method (pretrained and/or meta-learned init) "
                                               "on the fixed test episodes")
    # No argparse choices: listing them would import the methods (and torch) to build the parser;
    # an unknown name is refused with the list of methods when the command runs.
    p.add_argument("--method", required=True, help="a PEFT method of metaprompt.tuners (lora, bitfit, ...) or a "
                                                  "practitioner's baseline (centroid, linear_probe, ridge, setfit)")
    p.add_argument("--config", type=Path, help="YAML config (defaults when omitted)")
    p.add_argument("--out", type=Path, required=True,
                   help="new run directory (a practitioner's baseline: the same one again goes on after a kill)")
    p.add_argument("--init", choices=list(INITS), default="both",
                   help="pretrained: no meta-training; meta / both: meta-train first (default both)")
    p.add_argument("--json", type=Path, help="also write the results JSON here (a new file)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, also a method default (repeatable)")
    return p


def run(args) -> int:
    from metaprompt.baselines import BASELINES
    from metaprompt.config import Config, ConfigError

    from metaprompt.tuners import TUNERS

    if args.method in BASELINES:
        return _practitioner(args)
    if args.method not in TUNERS or args.method == "none":
        peft_methods = ", ".join(m for m in TUNERS.names() if m != "none")
        raise ConfigError(f"--method: unknown method {args.method!r}; choose a PEFT method ({peft_methods}) or a "
                          f"practitioner's baseline ({', '.join(BASELINES.names())})")
    from metaprompt.tuners import baseline_overrides
    from metaprompt.run.evaluate import evaluate
    from metaprompt.run.integrity import check_test_source, data_record, pinned_config
    from metaprompt.run.jsonio import dumps_strict
    from metaprompt.run.provenance import provenance
    from metaprompt.run.rundir import (CONFIG_FILE, RUN_FILE, RunDirError, check_output_file, check_run_dir, owned,
                                       used_entries)
    from metaprompt.run.setup import build_setup
    from metaprompt.run.train import train

    defaults = baseline_overrides(args.method)
    cfg = Config.load(args.config, [*defaults, *args.overrides])
    print(f"{args.method}: method defaults {', '.join(defaults)} (--set overrides them)")
    check_run_dir(args.out, resume=False)
    if args.json is not None:
        check_output_file(args.json, "--json", args.force)
    setup = build_setup(cfg)  # everything is checked before the run directory exists
    check_test_source(setup)  # too few test classes or examples, a bad episode file: fail before writing anything
    with owned(args.out, "baseline"):  # one owner for training and evaluation
        if used_entries(args.out):
            raise RunDirError(f"run directory {args.out} was written by another process meanwhile; choose another --out")
        if args.init == "pretrained":
            pinned = pinned_config(cfg, setup)
            (args.out / CONFIG_FILE).write_text(pinned.to_yaml(), encoding="utf-8")
            counts = setup.classifier.count(setup.classifier.init_params())
            info = {**provenance(), "trainable_params": counts, "dataset_sha256": setup.dataset.sha256,
                    "data_files": data_record(setup), "model": cfg.model.name, "meta_training": None,
                    "config": pinned.to_dict()}
            (args.out / RUN_FILE).write_text(dumps_strict(info, indent=2), encoding="utf-8")
        else:
            train(cfg, args.out, setup=setup)
        evaluate(args.out, json_path=args.json, inits=INITS[args.init], setup=setup, force=args.force)
    return 0


def _practitioner(args) -> int:
    from metaprompt.config import Config
    from metaprompt.run.practitioner import check_baseline_dir, format_row, run_baseline, write_baseline
    from metaprompt.run.rundir import check_output_file, owned

    cfg = Config.load(args.config, args.overrides)
    check_baseline_dir(args.out)
    if args.json is not None:
        check_output_file(args.json, "--json", args.force)
    with owned(args.out, "baseline"):  # one writer of the episode log and the results
        results = run_baseline(cfg, args.method, progress=cfg.log.progress, out=args.out)
        path = write_baseline(results, args.out)
    if args.json is not None:
        args.json.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    print(format_row(results))
    return 0
