"""Run a study (or all five) with one command: train → eval for every cell, resumable, then report.

    python experiments/run_study.py --study main --profile cpu            # one study
    python experiments/run_study.py --study all --profile cpu             # all five
    python experiments/run_study.py --study all --profile cpu --dry-run   # commands + estimated CPU time
    python experiments/run_study.py --study frozen --only 'huffpost-*'    # some cells
    python experiments/run_study.py --study all --profile cpu --smoke     # 2 train / 5 eval episodes, 1 cell per study

Cells run into ``experiments/runs/<profile>/<study>/<cell>/`` (git-ignored). A cell with a
``results.json`` is finished and skipped; an interrupted training is continued with
``metaprompt train --resume``; so running the same command again resumes a study. Each
finished cell's ``results.json`` (with its ``train_summary.json`` and ``run.json``) is copied
to ``experiments/results/<profile>/<study>/<cell>/`` and ``experiments/report.py`` writes
``experiments/results/<profile>/report.md`` and its plots. The cells are in
``experiments/studies.py``, the configs in ``configs/studies/<profile>/``.

Profiles: ``cpu`` (offline MiniLM, soft / prototype verbalizers, short texts; ``--tier 1``, the
1-shot cells of every study, fits ~4-5 h on 2 cores, ``--tier 2``, the 5-shot cells of main and
frozen, ~7 h more) and ``paper`` (bert-base-uncased from the hub, label words, AdamW meta-test adaptation,
1000 test episodes; for a GPU with internet). A data set that is not available (Amazon is
not shipped) is skipped with a message.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from studies import PROFILES, SMOKE, STUDIES, TITLES, Cell, build_cells, by_id, select  # noqa: E402

THREADS_2 = 0.6  # time with 2 threads ÷ time with 1 thread (MiniLM on this machine's 2 cores)
RUN_FILES = ("config.yaml", "run.json", "best.safetensors", "train_summary.json", "metrics.jsonl")


# --------------------------------------------------------------------------------- environment
def default_env() -> dict[str, str]:
    env = dict(os.environ)
    shared = ROOT.parent / "shared" / "data"
    if "METAPROMPT_DATA" not in env and (shared / "splits.json").is_file():
        env["METAPROMPT_DATA"] = str(shared)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("WANDB_MODE", "disabled")
    return env


def dataset_available(name: str, env: dict[str, str]) -> bool:
    from episodes.data import data_file_names
    from episodes.paths import resolve_data_dir

    old = os.environ.get("METAPROMPT_DATA")
    try:
        if env.get("METAPROMPT_DATA"):
            os.environ["METAPROMPT_DATA"] = env["METAPROMPT_DATA"]
        return any((folder / f).is_file() for folder in resolve_data_dir(None) for f in data_file_names(name))
    finally:
        if old is None:
            os.environ.pop("METAPROMPT_DATA", None)
        else:
            os.environ["METAPROMPT_DATA"] = old


def metaprompt_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "metaprompt"
    if not exe.is_file():
        return [sys.executable, "-m", "metaprompt.cli"]
    try:
        return [str(exe.relative_to(ROOT))]  # commands are run (and logged) from the repository root
    except ValueError:
        return [str(exe)]


# ---------------------------------------------------------------------------------- estimates
def load_costs(profile: str) -> dict:
    path = ROOT / "experiments" / "results" / profile / "costs.json"
    return json.loads(path.read_text())["costs"] if path.is_file() else {}


def estimate(cell: Cell, cells: dict[str, Cell], costs: dict, extra: list[str], threads: int,
             reference: bool = True) -> tuple[float, str]:
    """(estimated CPU seconds of this cell alone, how it was estimated)."""
    if cell.action == "copy_from":
        return 0.0, "a copy"
    cost = costs.get(cell.cost_key)
    note = ""
    if cost is None:  # e.g. Amazon (not measured here): the costs of 20news at the same lengths
        fallback = cell.cost_key.replace("amazon", "20news")
        cost = costs.get(fallback)
        note = f"costs of {fallback}" if cost else ""
    if cost is None:
        return float("nan"), "no CPU estimate: a GPU profile" if "paper" in str(cell.config) else \
            "not measured (run experiments/study_costs.py)"
    scale = THREADS_2 if threads >= 2 else 1.0
    cfg = cell_config(cell, cells, extra)
    e = cfg.eval
    inits = 2 if cell.init == "both" else 1
    selection = len(e.select_backbone_lr) * e.select_episodes  # validation episodes per init
    seconds = inits * (e.episodes + selection) * cost["eval"] + \
        e.episodes * (cost["reference"] if e.reference and reference else 0.0)
    seconds += cost["setup_s"]
    if cell.action in ("train_eval", "baseline") and cell.init != "pretrained":
        t = cfg.train
        steps = t.episodes
        if "train" in cost:
            train = steps * cost["train"]
        else:  # maml++ phases: multi-step loss (first order), first order, second order
            m = cfg.meta
            msl = min(steps, m.multi_step_loss_episodes) if m.multi_step_loss else 0
            so = max(0, steps - max(int(m.first_order_fraction * steps), msl))
            fo = max(0, steps - msl - so)
            train = msl * cost.get("train_msl", cost["train_fo"]) + fo * cost["train_fo"] + \
                so * cost.get("train_so", cost["train_fo"])
        val_points = steps // t.val_every + 1 + (1 if steps % t.val_every else 0)
        seconds += train + val_points * t.val_episodes * cost["eval"] + cost["setup_s"]
    return seconds * scale, note


def cell_config(cell: Cell, cells: dict[str, Cell], extra=()):
    """The config a cell's evaluation runs with."""
    from metaprompt.config import Config
    from metaprompt.tuners import baseline_overrides

    if cell.action in ("eval_from", "copy_from"):
        base = cells[cell.source]
        evals = [o for o in cell.eval_overrides if not o.startswith("label=")]
        return cell_config(base, cells, [*extra, *evals])
    defaults = baseline_overrides(cell.method) if cell.action == "baseline" else []
    return Config.load(ROOT / cell.config, [*defaults, *cell.overrides, *extra])


# ------------------------------------------------------------------------------------ running
class Runner:
    def __init__(self, profile: str, runs: Path, results: Path, threads: int, extra: list[str], dry_run: bool,
                 env: dict[str, str], jobs: int = 1):
        self.profile, self.runs, self.results = profile, runs, results
        self.threads, self.extra, self.dry_run, self.env, self.jobs = threads, extra, dry_run, env, jobs
        self.cells = by_id(build_cells(profile))
        self.done: set[str] = set()
        self.log = runs / "commands.log"
        self.no_reference: set[str] = set()
        self.locks = {cid: threading.RLock() for cid in self.cells}
        self.print_lock = threading.Lock()

    def say(self, text: str) -> None:
        with self.print_lock:
            print(text, flush=True)

    def share_references(self, cells: list[Cell]) -> None:
        """The training-free reference depends only on the test episodes, the data, the model and
        the input length: score it in the first cell of each (data set, shot, model, length); the
        report lends it to the others."""
        owners: set[tuple] = set()
        for cell in cells:
            if cell.action == "copy_from":
                continue
            cfg = cell_config(cell, self.cells, self.extra)
            key = (cell.dataset, cell.k_shot, cfg.model.name, cfg.model.max_length, cfg.eval.episodes)
            if key in owners:
                self.no_reference.add(cell.id)
            owners.add(key)

    def reference_sets(self, cell: Cell) -> list[str]:
        return ["--set", "eval.reference=false"] if cell.id in self.no_reference else []

    def dir(self, cell: Cell) -> Path:
        return self.runs / cell.study / cell.name

    def common(self) -> list[str]:
        sets = [f"threads={self.threads}", "log.progress=false", *self.extra]
        return [x for s in sets for x in ("--set", s)]

    def sh(self, cell: Cell | None, argv: list[str]) -> None:
        text = shlex.join(argv)
        name = cell.id if cell else "report"
        self.say(f"  [{name}] $ {text}")
        if self.dry_run:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.print_lock, open(self.log, "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        started = time.perf_counter()
        if self.jobs > 1 and cell:  # parallel cells: each cell's output goes to its own log
            out = self.runs / cell.study / f"{cell.name}.log"
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a", encoding="utf-8") as handle:
                handle.write(f"$ {text}\n")
                handle.flush()
                result = subprocess.run(argv, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        else:
            result = subprocess.run(argv, cwd=ROOT, env=self.env)
        if result.returncode:
            raise RuntimeError(f"[{name}] command failed (exit {result.returncode}): {text}")
        self.say(f"  [{name}] done in {time.perf_counter() - started:.0f} s")

    # -- one cell --------------------------------------------------------------------------
    def train(self, cell: Cell) -> bool:
        """Train ``cell`` unless it is trained (resume an interrupted training). True when a
        ``metaprompt baseline`` command ran, which evaluates too."""
        with self.locks[cell.id]:
            run = self.dir(cell)
            if (run / "train_summary.json").is_file() or (run / "results.json").is_file():
                return False
            mp = metaprompt_cmd()
            if (run / "checkpoint.safetensors").is_file():
                self.sh(cell, [*mp, "train", "--resume", str(run.relative_to(ROOT)), *self.common()])
                return False
            if run.exists() and not self.dry_run:  # stopped before its first checkpoint: start again
                self.say(f"  [{cell.id}] {run} holds no checkpoint: starting it again")
                shutil.rmtree(run)
            sets = [x for s in cell.overrides for x in ("--set", s)]
            if cell.action == "baseline":
                self.sh(cell, [*mp, "baseline", "--method", cell.method, "--config", cell.config, "--init", cell.init,
                               "--out", str(run.relative_to(ROOT)), *sets, *self.reference_sets(cell),
                               *self.common()])
                return True
            self.sh(cell, [*mp, "train", "--config", cell.config, *sets, *self.common(),
                           "--out", str(run.relative_to(ROOT))])
            return False

    def evaluate(self, cell: Cell, run: Path) -> None:
        sets = [x for s in cell.eval_overrides for x in ("--set", s)]
        init = [] if cell.init == "both" else ["--init", cell.init]
        self.sh(cell, [*metaprompt_cmd(), "eval", str(run.relative_to(ROOT)), *init, *sets, *self.reference_sets(cell),
                       *self.common()])

    def run(self, cell: Cell) -> None:
        with self.locks[cell.id]:
            self._run(cell)

    def _run(self, cell: Cell) -> None:
        if cell.id in self.done:
            return
        run = self.dir(cell)
        if (run / "results.json").is_file():
            self.say(f"[{cell.id}] finished: {run.relative_to(ROOT) / 'results.json'}")
            self.done.add(cell.id)
            return
        self.say(f"[{cell.id}] {cell.action}" + (f" of {cell.source}" if cell.source else ""))
        if cell.action in ("train_eval", "baseline"):
            evaluated = self.train(cell)  # `metaprompt baseline` evaluates itself
            if not evaluated and not (run / "results.json").is_file():
                self.evaluate(cell, run)
        elif cell.action == "eval_from":
            source = self.cells[cell.source]
            self.train(source)
            src = self.dir(source)
            if not self.dry_run:
                run.mkdir(parents=True, exist_ok=True)
                for name in RUN_FILES:
                    if (src / name).is_file():
                        shutil.copy2(src / name, run / name)
            else:
                self.say(f"  [{cell.id}] copy {', '.join(RUN_FILES)} of {src.relative_to(ROOT)}")
            self.evaluate(cell, run)
            if not self.dry_run:  # say where the init comes from (the report's provenance shows it)
                results = json.loads((run / "results.json").read_text())
                results["init_from"] = source.id
                (run / "results.json").write_text(json.dumps(results, indent=2))
        elif cell.action == "copy_from":
            source = self.cells[cell.source]
            self.run(source)
            src = self.dir(source)
            self.say(f"  [{cell.id}] copy the results of {src.relative_to(ROOT)} (label {cell.study})")
            if not self.dry_run:
                run.mkdir(parents=True, exist_ok=True)
                for name in ("train_summary.json", "run.json", "metrics.jsonl"):
                    if (src / name).is_file():
                        shutil.copy2(src / name, run / name)
                results = json.loads((src / "results.json").read_text())
                results["label"] = cell.study
                results["copied_from"] = source.id
                (run / "results.json").write_text(json.dumps(results, indent=2))
        else:
            raise ValueError(f"unknown action {cell.action}")
        self.done.add(cell.id)

    # -- results and report ----------------------------------------------------------------
    def collect(self, cells: list[Cell]) -> list[Path]:
        copied = []
        for cell in cells:
            src = self.dir(cell)
            if not (src / "results.json").is_file():
                continue
            dst = self.results / cell.study / cell.name
            dst.mkdir(parents=True, exist_ok=True)
            for name in ("results.json", "train_summary.json", "run.json"):
                if (src / name).is_file():
                    shutil.copy2(src / name, dst / name)
            copied.append(dst / "results.json")
        for study in {c.study for c in cells}:
            title, description = TITLES[study]
            folder = self.results / study
            if folder.is_dir():
                (folder / "study.json").write_text(json.dumps(
                    {"study": study, "title": title, "description": description, "profile": self.profile},
                    indent=2) + "\n")
        return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--study", default="all", help=f"{' | '.join(STUDIES)} | all, or a comma-separated list")
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--only", help="cells to run: comma-separated globs or substrings of 'study/cell'")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and estimated CPU time only")
    parser.add_argument("--smoke", action="store_true",
                        help="2 training / 5 test episodes, one cell per study, into experiments/runs/smoke-<profile>")
    parser.add_argument("--tier", type=int, choices=[1, 2],
                        help="cpu profile: 1 = every study's cells that fit ~4-5 h on 2 cores (1-shot main and "
                             "frozen, ood, templates, peft); 2 = the 5-shot cells of main and frozen")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells run side by side (default 1); 2 jobs × 1 thread use 2 cores best")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads per run (cpu: 2 with --jobs 1, else 1; paper: torch's default)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra config override for every run (repeatable)")
    parser.add_argument("--no-report", action="store_true", help="do not copy results or write the report")
    args = parser.parse_args(argv)

    studies = list(STUDIES) if args.study == "all" else [s.strip() for s in args.study.split(",")]
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        parser.error(f"unknown study {unknown[0]!r}; choose from {', '.join(STUDIES)} or all")
    env = default_env()
    if args.profile == "cpu":
        env.setdefault("HF_HUB_OFFLINE", "1")
    tag = f"smoke-{args.profile}" if args.smoke else args.profile
    runs = ROOT / "experiments" / "runs" / tag
    results = (runs / "results") if args.smoke else ROOT / "experiments" / "results" / args.profile
    extra = [*(SMOKE if args.smoke else []), *args.extra]
    if args.threads is not None:
        threads = args.threads
    elif args.profile == "paper":
        threads = 0  # a GPU machine: torch's default CPU threads
    else:
        threads = 2 if args.jobs == 1 else 1
    runner = Runner(args.profile, runs, results, threads, extra, args.dry_run, env, jobs=args.jobs)
    cells = select(build_cells(args.profile), studies, args.only, args.smoke, args.tier)
    if not cells:
        print("no cell matches")
        return 1

    missing = sorted({c.dataset for c in cells} | {runner.cells[c.source].dataset for c in cells if c.source})
    missing = [d for d in missing if not dataset_available(d, env)]
    skipped = [c for c in cells if c.dataset in missing or (c.source and runner.cells[c.source].dataset in missing)]
    for name in missing:
        n = sum(1 for c in skipped if c.dataset == name or (c.source and runner.cells[c.source].dataset == name))
        print(f"skipping {n} cell(s) with data set '{name}': it is not available on this machine (not shipped; "
              f"`metaprompt data download` on a machine with internet, then put {name}.jsonl.gz in $METAPROMPT_DATA)")
    cells = [c for c in cells if c not in skipped]

    runner.share_references(cells)
    costs = load_costs(args.profile)
    print(f"profile {args.profile}{' (smoke)' if args.smoke else ''}: {len(cells)} cell(s), {args.jobs} job(s) × "
          f"{threads} thread(s); runs in {runs.relative_to(ROOT)}; estimates from "
          f"experiments/results/{args.profile}/costs.json (finished cells cost nothing)")
    total, per_study = 0.0, {}
    for cell in cells:
        finished = (runner.dir(cell) / "results.json").is_file()
        seconds, note = (0.0, "finished") if finished else \
            estimate(cell, runner.cells, costs, extra, threads, reference=cell.id not in runner.no_reference)
        if seconds == seconds:  # not NaN
            total += seconds
            per_study[cell.study] = per_study.get(cell.study, 0.0) + seconds
        est = "?" if seconds != seconds else f"{seconds / 60:5.0f} min"
        print(f"  {cell.id:42s} {cell.action:10s} {est}{'  (' + note + ')' if note else ''}")
    if per_study:
        print("  " + "; ".join(f"{s}: {v / 3600:.1f} h" for s, v in per_study.items()))
        print(f"estimated time: {total / 3600:.1f} h of {threads}-thread runs"
              + (f", about {total / 3600 / args.jobs:.1f} h wall with {args.jobs} jobs" if args.jobs > 1 else ""))

    failures = []

    def work(cell: Cell) -> None:
        try:
            runner.run(cell)
        except RuntimeError as err:
            failures.append(str(err))
            runner.say(f"error: {err}")

    if args.jobs > 1 and not args.dry_run:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(work, cells))
    else:
        for cell in cells:
            work(cell)
            if failures:
                break
    if failures:
        print(f"{len(failures)} cell(s) failed; run the same command again to resume", file=sys.stderr)
        return 1
    if args.dry_run or args.no_report:
        return 0
    copied = runner.collect(cells)
    if copied:
        title = f"metaprompt studies, {args.profile} profile" + (" (smoke test)" if args.smoke else "")
        runner.sh(None, [sys.executable, "experiments/report.py", str(results.relative_to(ROOT)), "--out",
                         str(results.relative_to(ROOT)), "--title", title])
    return 0


if __name__ == "__main__":
    sys.exit(main())
