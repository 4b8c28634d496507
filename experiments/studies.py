"""The five studies as cells: which config, which ``--set`` overrides, which data, in which order.

A cell is one ``metaprompt`` run (train → eval, a PEFT baseline, an evaluation of another
cell's learned init on another data set, or a copy of another cell's result). Each study
has two profiles: ``paper`` (bert-base-uncased with its MLM head, the published protocol,
for a GPU with internet) and ``cpu`` (the offline MiniLM, budgeted for 2 CPU cores).
``experiments/run_study.py`` runs them; this module only describes them.

    main       prompt + backbone meta-learned (MAML++) vs the pretrained init, all data sets, 1/5-shot
    frozen     frozen backbone, prompt only: soft prompt (+ soft / label-word verbalizer) and the
               MetaPrompter-style pool + RepVerb
    ood        meta-train on one data set's train classes, test on another's test classes
    templates  MetaPrompting's three templates: mean and std across templates
    peft       the PEFT baselines (`metaprompt baseline --method M`) on the same episodes
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("main", "frozen", "ood", "templates", "peft")
PROFILES = ("cpu", "paper")
DATASETS = ("huffpost", "amazon", "reuters", "20news")

TITLES = {
    "main": ("Main table: pretrained vs meta-learned init, prompt + backbone tuned",
             "Soft prompt and every backbone weight are meta-learned with MAML++ (first order early in "
             "training, second order at the end: derivative-order annealing); the pretrained init adapts "
             "the same parameters from the pretrained backbone and the hand-written prompt init."),
    "frozen": ("Frozen backbone, prompt only",
               "The backbone stays frozen; only the soft prompt and the verbalizer are adapted and "
               "meta-learned. 'prompt': a soft prompt in the template; 'pool': MetaPrompter's "
               "instance-dependent prompt pool with RepVerb (Jiang et al. 2023)."),
    "ood": ("Out-of-distribution meta-training",
            "The init meta-learned on the train classes of one data set is tested on the test classes of "
            "another (`metaprompt eval RUN --set data.dataset=...`; label words and template follow the test "
            "data set). Compare with the in-distribution rows of the same test data set in the other studies "
            "(same episodes)."),
    "templates": ("Template robustness",
                  "MetaPrompting's three templates per data set (`prompt.template_id` 0, 1, 2): mean and "
                  "standard deviation across templates of the pretrained and the meta-learned init."),
    "peft": ("PEFT baselines on the same episodes",
             "`metaprompt baseline --method M`: each parameter-efficient method adapted on the support set "
             "from its pretrained init, and from an init of its own parameters meta-learned with the same "
             "budget (FOMAML)."),
}

# Per data set: settings every cell of that data set gets (text budget, whole input length).
DATA_SETTINGS = {
    "cpu": {  # evaluation dominates the cpu budget and grows with the length: short texts
        "huffpost": ["data.max_text_tokens=40", "model.max_length=64"],
        "amazon": ["data.max_text_tokens=64", "model.max_length=80"],
        "reuters": ["data.max_text_tokens=64", "model.max_length=80"],
        "20news": ["data.max_text_tokens=64", "model.max_length=80"],
    },
    "paper": {name: [] for name in DATASETS},  # each paper config sets the lengths of its paper
}

# Per profile: what each study covers (the cpu profile trims: its tier 1 fits ~4-5 h on 2 cores).
PLAN = {
    "cpu": {
        "main_datasets": ("huffpost", "reuters", "20news", "amazon"),
        "frozen_datasets": ("huffpost", "reuters", "20news", "amazon"),
        "shots": (1, 5),
        "frozen_variants": ("prompt", "pool"),
        "pool_datasets": ("huffpost",),  # the pool variant costs ~1.6x the prompt one: HuffPost only
        # the studies below evaluate / vary the init of this study and variant
        "source": ("frozen", "prompt"),
        "ood_pairs": (("huffpost", "reuters"), ("huffpost", "20news"), ("reuters", "huffpost"),
                      ("20news", "huffpost")),
        "ood_shots": (1,),
        "template_datasets": ("huffpost",),
        "template_shots": (1,),
        "peft_methods": ("full", "lora", "ia3", "bitfit", "adapter", "prompt_tuning", "ptuning", "prefix",
                         "ptuning_v2"),
        "peft_datasets": ("huffpost",),
        "peft_shots": (1,),
        "peft_init": "both",  # each method adapted from the pretrained init and from its meta-learned init
        "tier": lambda k: 1 if k == 1 else 2,  # main/frozen 5-shot: tier 2
    },
    "paper": {
        "main_datasets": DATASETS,
        "frozen_datasets": DATASETS,
        "shots": (1, 5),
        "frozen_variants": ("prompt", "pool"),
        "pool_datasets": DATASETS,
        "source": ("main", None),
        "ood_pairs": tuple((a, b) for a in DATASETS for b in DATASETS if a != b),
        "ood_shots": (1, 5),
        "template_datasets": DATASETS,
        "template_shots": (1, 5),
        "peft_methods": ("full", "lora", "ia3", "bitfit", "adapter", "prompt_tuning", "ptuning", "prefix",
                         "ptuning_v2"),
        "peft_datasets": ("huffpost", "reuters"),
        "peft_shots": (1, 5),
        "peft_init": "both",
        "tier": lambda k: 1,
    },
}

SMOKE = ["train.episodes=2", "train.val_every=1", "train.val_episodes=2", "train.checkpoint_every=1",
         "eval.episodes=5"]
SMOKE_CELLS = {  # one cell per study (two for templates: a copied and a trained template)
    "main": ["huffpost-1shot"], "frozen": ["huffpost-1shot-prompt"], "ood": ["huffpost-to-reuters-1shot"],
    "templates": ["huffpost-1shot-t0", "huffpost-1shot-t1"], "peft": ["huffpost-1shot-lora"],
}


@dataclass
class Cell:
    """One run of a study.

    action: ``train_eval`` (metaprompt train, then eval), ``baseline`` (metaprompt baseline
    --method), ``eval_from`` (evaluate the learned init of cell ``source`` with ``eval_overrides``,
    e.g. on another data set), ``copy_from`` (the result of cell ``source``, unchanged).
    """

    study: str
    name: str
    action: str
    dataset: str
    k_shot: int
    config: str | None = None  # relative to the repository root
    overrides: list[str] = field(default_factory=list)
    eval_overrides: list[str] = field(default_factory=list)
    method: str | None = None  # baseline
    source: str | None = None  # "study/cell" for eval_from / copy_from
    init: str = "both"  # which inits are scored: both | meta | pretrained (baseline: no meta-training)
    tier: int = 1  # cpu profile: 1 = fits ~4-5 h on 2 cores; 2 = the 5-shot cells of main and frozen (~7 h more)
    cost_key: str = ""  # which measured costs apply (experiments/results/cpu/costs.json)

    @property
    def id(self) -> str:
        return f"{self.study}/{self.name}"

    def matches(self, pattern: str | None) -> bool:
        return not pattern or any(fnmatch.fnmatch(self.id, p.strip()) or p.strip() in self.id
                                  for p in pattern.split(","))


def _cfg(profile: str, name: str) -> str:
    return f"configs/studies/{profile}/{name}.yaml"


def _data(profile: str, dataset: str, k: int) -> list[str]:
    return [f"data.dataset={dataset}", f"data.k_shot={k}", *DATA_SETTINGS[profile][dataset]]


def source_cell(profile: str, dataset: str, k: int) -> str:
    study, variant = PLAN[profile]["source"]
    return f"{study}/{dataset}-{k}shot" + (f"-{variant}" if variant else "")


def build_cells(profile: str) -> list[Cell]:
    """Every cell of every study of ``profile``, in the order they run (sources first)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    plan = PLAN[profile]
    cells: list[Cell] = []
    for ds in plan["main_datasets"]:
        for k in plan["shots"]:
            cells.append(Cell("main", f"{ds}-{k}shot", "train_eval", ds, k, _cfg(profile, "main"),
                              [*_data(profile, ds, k), "label=main"], cost_key=f"main/{ds}/{k}",
                              tier=plan["tier"](k)))
    for ds in plan["frozen_datasets"]:
        for k in plan["shots"]:
            for variant in plan["frozen_variants"]:
                if variant == "pool" and ds not in plan["pool_datasets"]:
                    continue
                cells.append(Cell("frozen", f"{ds}-{k}shot-{variant}", "train_eval", ds, k,
                                  _cfg(profile, f"frozen-{variant}"), [*_data(profile, ds, k), "label=frozen"],
                                  cost_key=f"frozen-{variant}/{ds}/{k}", tier=plan["tier"](k)))
    src_study, src_variant = plan["source"]
    src_key = src_study + (f"-{src_variant}" if src_variant else "")
    for a, b in plan["ood_pairs"]:
        for k in plan["ood_shots"]:
            # only the meta-learned init: the pretrained init's score on b is that of the source
            # study's cell of b (same config, same episodes); the report takes it from there
            cells.append(Cell("ood", f"{a}-to-{b}-{k}shot", "eval_from", b, k, source=source_cell(profile, a, k),
                              eval_overrides=[f"data.dataset={b}", *DATA_SETTINGS[profile][b], "label=ood"],
                              init="meta", cost_key=f"{src_key}/{b}/{k}"))
    for ds in plan["template_datasets"]:
        for k in plan["template_shots"]:
            source = source_cell(profile, ds, k)
            for t in (0, 1, 2):
                name = f"{ds}-{k}shot-t{t}"
                if t == 0:  # the source study already uses template 0
                    cells.append(Cell("templates", name, "copy_from", ds, k, source=source,
                                      cost_key=f"{src_key}/{ds}/{k}"))
                else:
                    cells.append(Cell("templates", name, "train_eval", ds, k, _cfg(profile, src_key),
                                      [*_data(profile, ds, k), f"prompt.template_id={t}", "label=templates"],
                                      cost_key=f"{src_key}/{ds}/{k}"))
    for ds in plan["peft_datasets"]:
        for k in plan["peft_shots"]:
            for method in plan["peft_methods"]:
                cells.append(Cell("peft", f"{ds}-{k}shot-{method}", "baseline", ds, k, _cfg(profile, "peft"),
                                  [*_data(profile, ds, k), "label=peft"], method=method, init=plan["peft_init"],
                                  cost_key=f"peft-{method}/{ds}/{k}"))
    return cells


def select(cells: list[Cell], studies: list[str], only: str | None = None, smoke: bool = False,
           tier: int | None = None) -> list[Cell]:
    """The cells of ``studies`` matching ``only`` (comma-separated globs or substrings of
    "study/cell") and ``tier``; with ``smoke``, the SMOKE_CELLS of each study."""
    chosen = [c for c in cells if c.study in studies and c.matches(only) and (tier is None or c.tier == tier)]
    if smoke:
        chosen = [c for c in chosen if c.name in SMOKE_CELLS[c.study]]
    return chosen


def by_id(cells: list[Cell]) -> dict[str, Cell]:
    return {c.id: c for c in cells}
