"""Downstream prompt tuning from a metaprompt export, with transformers + peft only.

Takes a directory written by ``metaprompt export RUN --format peft --out DIR`` (a soft prompt:
``prompt.kind=embedding`` or ``ptuning``, i.e. a PROMPT_TUNING adapter), draws N few-shot tasks
from the data set's meta-test classes, and prompt-tunes three inits of the same peft model on
each task's support set, scoring its query set:

  meta    the exported (meta-learned) prompt and verbalizer temperature
  text    the prompt's pretrained init: the word embeddings of ``prompt.init_text``
  random  Gaussian vectors with the spread of the embedding table

The classifier on top is the soft verbalizer the export describes (score = T·cos(h, e_c) at
the [MASK] state, e_c initialised from the label words' input embeddings and tuned per task).
Every init sees the same tasks, the same examples and the same optimiser. Nothing from
metaprompt is imported: the export's JSON and safetensors files are all it reads.

    METAPROMPT_DATA=../shared/data HF_HUB_OFFLINE=1 \\
    python experiments/downstream_prompt_tuning.py DIR --tasks 100 [--optimizer adamw --lr 1e-3 --steps 20]
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir", type=Path)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("METAPROMPT_DATA", "data")),
                   help="folder with <dataset>.jsonl.gz and splits.json (default $METAPROMPT_DATA)")
    p.add_argument("--tasks", type=int, default=100, help="few-shot tasks drawn from the test classes")
    p.add_argument("--n-way", type=int, help="default: the export's")
    p.add_argument("--k-shot", type=int, help="default: the export's")
    p.add_argument("--n-query", type=int, default=15, help="query examples per class")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                   help="sgd: the export's inner loop (meta.inner_lr, meta.inner_steps); adamw: a common alternative")
    p.add_argument("--steps", type=int, help="optimiser steps on the support set (default: meta.inner_steps)")
    p.add_argument("--lr", type=float, help="learning rate (default: meta.inner_lr)")
    p.add_argument("--train-start-token", action="store_true",
                   help="also tune the virtual token that holds the start token ([CLS]); metaprompt does not")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the per-task accuracies here")
    return p.parse_args(argv)


# -- data -----------------------------------------------------------------------------------------
def read_data(folder: Path, dataset: str) -> tuple[list[str], np.ndarray, list[int]]:
    splits = json.loads((folder / "splits.json").read_text())[dataset]
    texts, labels = [], []
    with gzip.open(folder / splits["file"], "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return texts, np.asarray(labels), [int(c) for c in splits["test"]]


def draw_task(labels: np.ndarray, classes: list[int], n_way: int, k_shot: int, n_query: int, seed: int, index: int):
    rng = np.random.default_rng([seed, index])
    picked = rng.choice(classes, size=n_way, replace=False)
    support, query = [], []
    for local, c in enumerate(picked):
        ids = rng.choice(np.flatnonzero(labels == c), size=k_shot + n_query, replace=False)
        support += [(int(i), local) for i in ids[:k_shot]]
        query += [(int(i), local) for i in ids[k_shot:]]
    return [int(c) for c in picked], support, query


# -- the export's input recipe (metaprompt.json["peft"]["input_ids"]) -----------------------------
def tokenize(tokenizer, spec: dict, texts: list[str]) -> list[list[int]]:
    lead = " " if spec["text_leading_space"] else ""
    encoded = tokenizer([lead + t.lstrip() if lead else t for t in texts], add_special_tokens=False,
                        truncation=True, max_length=spec["text_max_tokens"])["input_ids"]
    return [spec["before_text"] + list(ids) + spec["after_text"] for ids in encoded]


def batch(rows: list[list[int]], pad: int, mask_id: int):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        attention[i, :len(r)] = 1
    return ids, attention, torch.tensor([r.index(mask_id) for r in rows])


# -- the soft-verbalizer head ---------------------------------------------------------------------
class SoftVerbalizer(torch.nn.Module):
    """score_c = T · cos(h, e_c); e_c starts at the mean input embedding of class c's label words
    (each word: the mean over its word pieces), T = exp(log_scale)."""

    def __init__(self, table: torch.Tensor, label_word_ids: list[list[list[int]]], log_scale: float):
        super().__init__()
        emb = torch.stack([torch.stack([table[torch.tensor(w)].mean(0) for w in words if w]).mean(0)
                           for words in label_word_ids])
        self.class_emb = torch.nn.Parameter(emb.detach().clone())
        self.log_scale = torch.nn.Parameter(torch.tensor(float(log_scale)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * (F.normalize(h, dim=-1) @ F.normalize(self.class_emb, dim=-1).T)


def mask_states(model, ids, attention, mask_pos, offset: int) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=attention, output_hidden_states=True)
    hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) is not None else out.last_hidden_state
    return hidden[torch.arange(ids.shape[0]), mask_pos + offset]


def mean_ci95(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    transformers.logging.set_verbosity_error()
    meta = json.loads((args.export_dir / "metaprompt.json").read_text())
    p = meta.get("peft") or {}
    if p.get("prompt_peft_type") != "PROMPT_TUNING" or p.get("base_model_dir") or p.get("backbone_adapter"):
        raise SystemExit(f"{args.export_dir}: this script tunes a soft prompt on a frozen base model (an export "
                         "of prompt.kind=embedding or ptuning, --format peft); this export is "
                         f"{p.get('peft_type') or 'not a peft export'}")
    if meta["verbalizer"]["kind"] != "soft":
        raise SystemExit(f"the export's verbalizer is '{meta['verbalizer']['kind']}'; this script implements the "
                         "soft verbalizer head only")
    cfg = meta["config"]
    steps = args.steps if args.steps is not None else cfg["meta"]["inner_steps"]
    lr = args.lr if args.lr is not None else cfg["meta"]["inner_lr"]
    n_way = args.n_way or meta["n_way"]
    k_shot = args.k_shot or meta["k_shot"]

    base_path = meta["base_model"]["path"] if Path(meta["base_model"]["path"]).exists() else meta["base_model"]["name"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_path)
    base = getattr(transformers, p["auto_class"]).from_pretrained(base_path)
    # peft loads prompt adapters for inference only (PeftModel.from_pretrained refuses is_trainable=True
    # for them); to train one: a fresh peft model from the saved config, then the saved weights.
    config = PeftConfig.from_pretrained(str(args.export_dir))
    config.inference_mode = False
    model = get_peft_model(base, config)
    set_peft_model_state_dict(model, load_file(str(args.export_dir / "adapter_model.safetensors")))
    model.eval()  # no dropout: the adaptation is deterministic, as in metaprompt
    prompt = model.prompt_encoder["default"].embedding.weight
    table = model.get_base_model().get_input_embeddings().weight.detach()
    n_start = len(p["start_token_ids"])

    # The three inits of the virtual tokens: [start token(s)] + the prompt.
    length = prompt.shape[0] - n_start
    text_ids = [i for i in tokenizer(cfg["prompt"]["init_text"], add_special_tokens=False).input_ids
                if i not in tokenizer.all_special_ids]
    text_ids = (text_ids * math.ceil(length / len(text_ids)))[:length]
    generator = torch.Generator().manual_seed(args.seed)
    start_rows = prompt.detach()[:n_start].clone()
    inits = {
        "meta": (prompt.detach().clone(), float(load_file(str(args.export_dir / p["verbalizer_file"]))["log_scale"])),
        "text": (torch.cat([start_rows, table[torch.tensor(text_ids)]]), math.log(cfg["verbalizer"]["scale"])),
        "random": (torch.cat([start_rows, torch.randn(length, table.shape[1], generator=generator) * table.std()]),
                   math.log(cfg["verbalizer"]["scale"])),
    }

    texts, labels, test_classes = read_data(args.data, meta["dataset"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    accuracies = {name: [] for name in inits}
    started = time.perf_counter()
    for t in range(args.tasks):
        classes, support, query = draw_task(labels, test_classes, n_way, k_shot, args.n_query, args.seed, t)
        s_ids = batch(tokenize(tokenizer, p["input_ids"], [texts[i] for i, _ in support]), pad, p["mask_token_id"])
        q_ids = batch(tokenize(tokenizer, p["input_ids"], [texts[i] for i, _ in query]), pad, p["mask_token_id"])
        s_y = torch.tensor([y for _, y in support])
        q_y = torch.tensor([y for _, y in query])
        words = [meta["label_word_ids"][str(c)] for c in classes]
        for name, (vectors, log_scale) in inits.items():
            with torch.no_grad():
                prompt.copy_(vectors)
            head = SoftVerbalizer(table, words, log_scale)
            params = [prompt, *head.parameters()]
            optimiser = (torch.optim.SGD(params, lr=lr) if args.optimizer == "sgd"
                         else torch.optim.AdamW(params, lr=lr, weight_decay=0.0))
            for _ in range(steps):
                loss = F.cross_entropy(head(mask_states(model, *s_ids, p["output_offset"])), s_y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if not args.train_start_token:
                    prompt.grad[:n_start] = 0.0
                optimiser.step()
            with torch.no_grad():
                preds = head(mask_states(model, *q_ids, p["output_offset"])).argmax(-1)
            accuracies[name].append(float((preds == q_y).float().mean()))
    seconds = time.perf_counter() - started

    print(f"{meta['dataset']} test classes, {n_way}-way {k_shot}-shot, {args.n_query} queries/class, "
          f"{args.tasks} tasks (seed {args.seed}); base model {meta['base_model']['name']}; peft {p['peft_type']}, "
          f"{prompt.shape[0]} virtual tokens ({n_start} start + {length} prompt)")
    print(f"tuning: {args.optimizer}, {steps} steps, lr {lr}, prompt + soft verbalizer (class embeddings, "
          f"temperature); {seconds:.0f} s in all")
    print("")
    print("| prompt init | accuracy (%) mean ± 95% CI | Δ vs meta (paired) |")
    print("|---|---|---|")
    for name, values in accuracies.items():
        mean, ci = mean_ci95(values)
        diff = ""
        if name != "meta":
            dm, dc = mean_ci95(np.asarray(accuracies["meta"]) - np.asarray(values))
            diff = f"meta − {name}: {100 * dm:+.1f} ± {100 * dc:.1f}"
        print(f"| {name} | {100 * mean:.1f} ± {100 * ci:.1f} | {diff} |")
    exported = meta.get("metrics", {}).get("meta")
    if exported:
        ci = exported.get("accuracy_ci95")  # null when the init was scored on one episode
        print(f"\n(`metaprompt eval` of the same init: {100 * exported['accuracy_mean']:.1f} ± "
              f"{'n/a' if ci is None else f'{100 * ci:.1f}'} on its own {meta['metrics'].get('n_episodes')} episodes)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "steps": steps, "lr": lr,
                                         "accuracies": accuracies}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
