"""The ``metaprompt`` command. Thin: parses arguments and calls ``metaprompt.run``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from metaprompt.errors import UserError


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set meta.inner_lr=0.05 (repeatable)")


def _add_data_change(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-data-change", action="store_true",
                        help="go on when the data or class-split file differs from the one the run was trained on "
                             "(a loud warning, also written into the results)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaprompt", description=__doc__.splitlines()[0].strip('"'))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="meta-train a prompt init")
    p.add_argument("--config", type=Path, help="YAML config (defaults when omitted)")
    p.add_argument("--out", type=Path, help="new run directory")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    _add_set(p)

    p = sub.add_parser("eval", help="score pretrained and meta-learned init on fixed test episodes")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, help="number of test episodes (default eval.episodes)")
    p.add_argument("--json", type=Path, help="also write the results JSON here (a new file)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--init", choices=["pretrained", "meta", "both"], default="both",
                   help="which init to score (default both)")
    _add_data_change(p)
    _add_set(p)

    p = sub.add_parser("export", help="export the learned init")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--format", default="native", choices=["native", "peft"],
                   help="native: init.safetensors + metaprompt.json (default); peft: also a Hugging Face peft "
                        "adapter (adapter_config.json + adapter_model.safetensors) where the design has one")
    _add_data_change(p)
    _add_set(p)

    p = sub.add_parser("load", help="check an export directory and print what it holds")
    p.add_argument("export_dir", type=Path)
    p.add_argument("--model", help="check the export against this base model (hub id, directory or alias)")

    p = sub.add_parser("episodes", help="write a fixed episode file")
    p.add_argument("--dataset", required=True, help="huffpost | amazon | reuters | 20news | custom")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=1)
    p.add_argument("--n-query", type=int, default=15)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", type=Path, required=True, help="the episode file to write (a new file)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    _add_set(p)

    p = sub.add_parser("data", help="download or check data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="fetch Bao et al.'s four data sets into the cache (needs internet)")
    d.add_argument("--dest", type=Path, help="target folder (default: the download cache)")
    d.add_argument("--url", help="alternative URL of data.zip")
    d.add_argument("--force", action="store_true", help="re-download data sets already present")
    _add_set(d)
    d = data_sub.add_parser("check", help="report every problem of the data files in DIR (or one file)")
    d.add_argument("path", type=Path)
    d.add_argument("--splits", type=Path, help="class-split file of a data FILE (or --set data.splits=FILE): also "
                                               "check its labels against it and report texts shared by classes of "
                                               "two splits")
    _add_set(d)

    from metaprompt.run import baseline as peft_cli  # light: no torch at parse time

    peft_cli.add_parser(sub)

    return parser


def _cmd_train(args) -> int:
    from metaprompt.config import Config, ConfigError
    from metaprompt.run.train import CONFIG_FILE, train

    if args.resume:
        if args.config or args.out:
            raise ConfigError("--resume RUN_DIR continues a run with its own config; drop --config/--out")
        cfg = Config.load(args.resume / CONFIG_FILE, args.overrides)
        summary = train(cfg, args.resume, resume=True)
        run_dir = args.resume
    else:
        if not args.out:
            raise ConfigError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        cfg = Config.load(args.config, args.overrides)
        summary = train(cfg, args.out)
        run_dir = args.out
    from metaprompt.run.distributed import is_main_process

    if not is_main_process():  # torchrun / accelerate launch: rank 0 reports
        return 0
    print(f"trained {summary['episodes']} episodes in {summary['train_seconds']:.0f} s "
          f"({summary['seconds_per_episode']:.2f} s/episode); best validation accuracy "
          f"{100 * summary['best_val_accuracy']:.1f}% after {summary['best_episodes']} episodes; run: {run_dir}")
    return 0


def _cmd_eval(args) -> int:
    from metaprompt.run.evaluate import evaluate

    inits = ("pretrained", "meta") if args.init == "both" else (args.init,)
    evaluate(args.run_dir, args.overrides, args.episodes, args.json, inits=inits, force=args.force,
             allow_data_change=args.allow_data_change)
    return 0


def _cmd_export(args) -> int:
    from metaprompt.run.export import export_run

    out = export_run(args.run_dir, args.out, args.format, allow_data_change=args.allow_data_change)
    print(f"exported to {out}")
    return 0


def _cmd_load(args) -> int:
    from metaprompt.load import load_export

    print(load_export(args.export_dir, model=args.model).describe())
    return 0


def _cmd_episodes(args) -> int:
    from episodes import make_episode_file, write_episode_file
    from metaprompt.config import SEED_MAX, Config
    from metaprompt.run.rundir import check_output_file
    from metaprompt.run.setup import load_data

    for flag, value, low in (("--n-way", args.n_way, 2), ("--k-shot", args.k_shot, 1), ("--n-query", args.n_query, 1),
                             ("--count", args.count, 1), ("--seed", args.seed, 0)):
        if value < low:
            raise UserError(f"{flag} must be ≥ {low}, got {value}")
    if args.seed > SEED_MAX:
        raise UserError(f"--seed must be at most 2**64 - 1, got {args.seed}")
    check_output_file(args.out, "--out", args.force, example="episodes.jsonl")  # before the data is read
    cfg = Config.load(None, [f"data.dataset={args.dataset}", *args.overrides])
    dataset = load_data(cfg)
    header, episodes = make_episode_file(dataset, args.split, args.n_way, args.k_shot, args.n_query,
                                         args.count, args.seed)
    write_episode_file(args.out, header, episodes)
    print(f"wrote {len(episodes)} {args.n_way}-way {args.k_shot}-shot episodes of {dataset.name} "
          f"({args.split} classes) to {args.out}")
    return 0


def _cmd_data(args) -> int:
    from metaprompt.config import Config

    cfg = Config.load(None, args.overrides)
    if args.data_command == "download":
        from episodes.download import download_datasets

        kwargs = {"dest": args.dest or (Path(cfg.data.dir) if cfg.data.dir else None), "force": args.force}
        if args.url:
            kwargs["url"] = args.url
        written = download_datasets(**kwargs)
        for name, path in written.items():
            print(f"{name}: {path}")
        return 0
    from episodes import check_data_dir, check_data_file

    if args.path.is_dir():
        problems = check_data_dir(args.path)
    else:  # with --splits FILE also the labels against the splits (and texts shared across splits)
        from episodes.data import read_split_file

        split_file = args.splits or cfg.data.splits
        splits = read_split_file(split_file)[0] if split_file else None
        problems = check_data_file(args.path, splits)
    errors = [p for p in problems if getattr(p, "severity", "error") == "error"]
    for problem in problems:
        print(problem)
    print(f"{len(errors)} error(s), {len(problems) - len(errors)} note(s) in {args.path}")
    return 1 if errors else 0


def _cmd_baseline(args) -> int:
    from metaprompt.run import baseline as peft_cli

    return peft_cli.run(args)


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "export": _cmd_export, "load": _cmd_load,
            "episodes": _cmd_episodes, "data": _cmd_data, "baseline": _cmd_baseline}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        if not args.verbose:
            transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would bury an error
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
