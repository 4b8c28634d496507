"""Recipe search for issue #24: a soft prompt meta-learned *through* the frozen encoder, read out
by mean pooling, with class prototypes that mix the support mean and the label words' embedding.

The model (``PromptedPrototypes``): each text is encoded as ``[CLS] p_1..p_L text [SEP]`` (the
``p_i`` are learned input vectors, initialised from the word embeddings of ``--init-text``), its
final hidden states are mean-pooled over the real tokens but the prompt slots (the pooling this
backbone was trained for) and L2-normalised. A class's prototype is
``(1 - a) * mean(support) + a * e(label words)`` where ``e(label words)`` is the class's label
words encoded the same way (under the same prompt), then normalised; a query scores
``t * cos(query, prototype)``. The mixing weight a (a logit, started so that a = 1 / (k + 1):
the label words count as one more support example, the nearest-centroid + label words baseline)
and the temperature t are learned with the prompt. Training is prototypical (Snell et al. 2017):
no inner loop, the query loss of each training-class episode is back-propagated into the prompt,
a and t; at test time the prompt is fixed, so each test text is encoded once.

Honest selection: ``search`` scores variants on validation-class episodes only and appends every
variant to experiments/results/recipes/<cell>/validation.jsonl; ``test`` scores one chosen
variant once on the cell's committed 600 test episodes (rebuilt, sha256 checked) and pairs it
with the baselines of experiments/results/baselines/<cell>.json on the same episodes.

    python experiments/prompted_prototypes.py search --cell huffpost-1shot-prompt --episodes 400 ...
    python experiments/prompted_prototypes.py test --cell huffpost-1shot-prompt --episodes 400 ...
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from episodes import make_episode_file  # noqa: E402
from episodes.store import episodes_sha256  # noqa: E402
from metaprompt.config import Config  # noqa: E402
from metaprompt.model.backbone import load_backbone  # noqa: E402
from metaprompt.run.jsonio import dumps_strict  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.setup import load_data  # noqa: E402
from metaprompt.run.stats import mean_ci95  # noqa: E402

FROZEN = ROOT / "experiments" / "results" / "cpu" / "frozen"
BASELINES = ROOT / "experiments" / "results" / "baselines"
OUT = ROOT / "experiments" / "results" / "recipes"


class PromptedPrototypes(torch.nn.Module):
    def __init__(self, backbone, max_text_tokens: int, length: int, init_text: str, pool: str = "text"):
        super().__init__()
        self.tokenizer = backbone.tokenizer
        self.bert = backbone.encoder.transformer
        for p in self.bert.parameters():
            p.requires_grad_(False)
        self.bert.eval()
        self.max_text_tokens = max_text_tokens
        self.pool = pool
        table = self.bert.get_input_embeddings().weight
        ids = self.tokenizer(init_text, add_special_tokens=False)["input_ids"] if length else []
        ids = (ids * (length // max(len(ids), 1) + 1))[:length]
        self.prompt = torch.nn.Parameter(table[ids].detach().clone() if length else torch.zeros(0, table.shape[1]))
        self.mix_logit = torch.nn.Parameter(torch.zeros(()))
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self._ids: dict[str, list[int]] = {}

    def set_mix(self, k_shot: int) -> None:
        with torch.no_grad():
            self.mix_logit.fill_(-math.log(k_shot))  # sigmoid = 1 / (k + 1)

    def token_ids(self, texts):
        todo = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if todo:
            enc = self.tokenizer(todo, add_special_tokens=False, truncation=True, max_length=self.max_text_tokens)
            self._ids.update(zip(todo, enc["input_ids"]))
        return [self._ids[t] for t in texts]

    def embed(self, texts) -> torch.Tensor:
        """[B, H] normalised mean-pooled states of ``texts`` under the current prompt."""
        ids = self.token_ids(texts)
        tok = self.tokenizer
        width = max(len(i) for i in ids) + 2
        L = self.prompt.shape[0]
        input_ids = torch.full((len(ids), width), tok.pad_token_id)
        mask = torch.zeros(len(ids), width + L, dtype=torch.long)
        for r, row in enumerate(ids):
            full = [tok.cls_token_id, *row, tok.sep_token_id]
            input_ids[r, :len(full)] = torch.tensor(full)
            mask[r, :len(full) + L] = 1
        words = self.bert.get_input_embeddings()(input_ids)
        embeds = torch.cat([words[:, :1], self.prompt.unsqueeze(0).expand(len(ids), -1, -1), words[:, 1:]], 1)
        hidden = self.bert(inputs_embeds=embeds, attention_mask=mask)[0]
        weights = mask.clone().float()
        if self.pool == "text":
            weights[:, 1:1 + L] = 0.0
        weights = weights.unsqueeze(-1)
        return F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)

    def logits(self, support: torch.Tensor, labels: torch.Tensor, words: torch.Tensor, query: torch.Tensor):
        n = words.shape[0]
        onehot = (labels.unsqueeze(1) == torch.arange(n)).float()
        mean = F.normalize(onehot.T @ support / onehot.sum(0).unsqueeze(1), dim=-1)
        a = torch.sigmoid(self.mix_logit)
        protos = F.normalize((1 - a) * mean + a * words, dim=-1)
        return self.log_scale.exp() * query @ protos.T


def label_text(words) -> str:
    return " ".join(words)


def episode_inputs(model, dataset, episode, cache=None):
    texts, lw = dataset.texts, dataset.label_words
    embed = model.embed if cache is None else (lambda ts: torch.stack([cache[t] for t in ts]))
    support = embed([texts[i] for i in episode.support])
    query = embed([texts[i] for i in episode.query])
    words = embed([label_text(lw[c]) for c in episode.classes])
    return support, torch.as_tensor(episode.support_labels()), words, query, torch.as_tensor(episode.query_labels())


@torch.no_grad()
def score(model, dataset, episodes, batch: int = 128) -> list[float]:
    """Per-episode accuracy with a fixed prompt: each distinct text is encoded once."""
    texts = dataset.texts
    needed = {texts[i] for e in episodes for i in (*e.support, *e.query)}
    needed |= {label_text(dataset.label_words[c]) for e in episodes for c in e.classes}
    needed = sorted(needed)
    cache = {}
    model.eval()
    for s in range(0, len(needed), batch):
        chunk = needed[s:s + batch]
        cache.update(zip(chunk, model.embed(chunk)))
    accs = []
    for e in episodes:
        s, sl, w, q, ql = episode_inputs(model, dataset, e, cache)
        accs.append(float((model.logits(s, sl, w, q).argmax(-1) == ql).float().mean()))
    return accs


def train(model, dataset, episodes, lr: float, checkpoints=(), on_checkpoint=None, progress=True):
    from tqdm.auto import tqdm

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    started = time.perf_counter()
    for step, e in enumerate(tqdm(episodes, desc="train", disable=not progress, mininterval=10), 1):
        s, sl, w, q, ql = episode_inputs(model, dataset, e)
        loss = F.cross_entropy(model.logits(s, sl, w, q), ql)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in checkpoints and on_checkpoint:
            on_checkpoint(step, time.perf_counter() - started)
    return (time.perf_counter() - started) / max(len(episodes), 1)


def cell_setup(cell: str):
    committed = json.loads((FROZEN / cell / "results.json").read_text())
    cfg = Config.from_dict(committed["config"], source=f"{cell} results config")
    dataset = load_data(cfg)
    if dataset.sha256 != committed["data_sha256"]:
        raise SystemExit(f"{cell}: the data file differs from the one the cell was scored on")
    return committed, cfg, dataset


def build(args, cfg, backbone):
    torch.manual_seed(args.seed)
    tokens = args.max_text_tokens or cfg.data.max_text_tokens
    model = PromptedPrototypes(backbone, tokens, args.length, args.init_text, args.pool)
    model.set_mix(cfg.data.k_shot)
    if args.fixed_mix:
        model.mix_logit.requires_grad_(False)
    return model


def variant(args) -> dict:
    return {k: getattr(args, k) for k in ("length", "init_text", "pool", "lr", "fixed_mix", "max_text_tokens", "seed")}


def search(args) -> None:
    committed, cfg, dataset = cell_setup(args.cell)
    d = cfg.data
    torch.set_num_threads(args.threads)
    backbone = load_backbone(cfg.model.name)
    model = build(args, cfg, backbone)
    _, val = make_episode_file(dataset, "val", d.n_way, d.k_shot, d.n_query, args.val_episodes, cfg.train.val_seed)
    _, tr = make_episode_file(dataset, "train", d.n_way, d.k_shot, d.n_query, max(args.episodes), args.seed)
    out = OUT / args.cell
    out.mkdir(parents=True, exist_ok=True)

    def record(step, seconds):
        started = time.perf_counter()
        accs = score(model, dataset, val)
        mean, ci = mean_ci95(accs)
        row = {**variant(args), "train_episodes": step, "val_mean": mean, "val_ci95": ci,
               "val_episodes": len(val), "val_seed": cfg.train.val_seed, "train_seconds": seconds,
               "mix": float(torch.sigmoid(model.mix_logit)), "scale": float(model.log_scale.exp()),
               "val_seconds": time.perf_counter() - started}
        print(json.dumps(row), flush=True)
        with open(out / "validation.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    record(0, 0.0)
    train(model, dataset, tr, args.lr, set(args.episodes), record, progress=args.progress)


def test(args) -> None:
    committed, cfg, dataset = cell_setup(args.cell)
    d = cfg.data
    torch.set_num_threads(args.threads)
    header, test_eps = make_episode_file(dataset, "test", d.n_way, d.k_shot, d.n_query, committed["n_episodes"],
                                         cfg.eval.seed)
    if episodes_sha256(header, test_eps) != committed["episodes_sha256"]:
        raise SystemExit(f"{args.cell}: the rebuilt test episodes differ from the committed ones")
    backbone = load_backbone(cfg.model.name)
    model = build(args, cfg, backbone)
    steps = max(args.episodes)
    _, tr = make_episode_file(dataset, "train", d.n_way, d.k_shot, d.n_query, steps, args.seed)
    start_accs = score(model, dataset, test_eps)
    per_episode = train(model, dataset, tr, args.lr, progress=args.progress)
    started = time.perf_counter()
    accs = score(model, dataset, test_eps)
    test_seconds = time.perf_counter() - started
    base = json.loads((BASELINES / f"{args.cell}.json").read_text())
    rows = []
    for b in base["baselines"]:
        diff = [x - y for x, y in zip(accs, b["accuracies_per_episode"])]
        m, c = mean_ci95(diff)
        rows.append({"baseline": b["baseline"], "accuracy_mean": b["accuracy_mean"], "diff_mean": m, "diff_ci95": c,
                     "better": sum(x > 0 for x in diff), "worse": sum(x < 0 for x in diff)})
    mean, ci = mean_ci95(accs)
    res = {"cell": args.cell, "variant": variant(args), "train_episodes": steps, "accuracy_mean": mean,
           "accuracy_ci95": ci, "accuracies_per_episode": accs, "untrained_mean": mean_ci95(start_accs)[0],
           "seconds_per_train_episode": per_episode, "seconds_per_test_episode": test_seconds / len(test_eps),
           "mix": float(torch.sigmoid(model.mix_logit)), "scale": float(model.log_scale.exp()),
           "episodes_sha256": committed["episodes_sha256"], "vs_baselines": rows, "command": " ".join(sys.argv),
           "provenance": provenance()}
    out = OUT / args.cell
    out.mkdir(parents=True, exist_ok=True)
    (out / "test.json").write_text(dumps_strict(res, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in res.items() if k not in ("accuracies_per_episode", "provenance")}, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("search", "test"))
    p.add_argument("--cell", required=True)
    p.add_argument("--episodes", type=int, nargs="+", default=[400], help="training episodes (search: checkpoints)")
    p.add_argument("--val-episodes", type=int, default=100)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--init-text", default="the news article")
    p.add_argument("--pool", choices=("text", "all"), default="text")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--fixed-mix", action="store_true")
    p.add_argument("--max-text-tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    search(args) if args.mode == "search" else test(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
