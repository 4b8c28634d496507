"""Benchmark (not a test): meta-training throughput (episodes/s) and peak memory against
sequence length and backbone size, first and second order, 1 and 2 processes.

Each cell times the trainer's own outer step (``metaprompt.run.train``): sample the tasks of a
meta-batch, ``algorithm.accumulate`` each (this process's share of them), sum the
meta-gradient over processes (``metaprompt.run.distributed``), clip and step the optimiser.
Processes are started with ``torch.multiprocessing.spawn`` and a Gloo/NCCL group, as
``torchrun`` would start them. With one GPU, two processes share it (Gloo): that column
shows whether a second process fills the gaps of a launch-bound model, not multi-GPU scaling.

Model FLOPs per episode (for the fraction of the GPU's measured bf16 matmul rate): the matmuls
of the encoder's forward pass, 2·(4H² + 2HF) per token and layer (Q, K, V, output and the two
feed-forward matrices) plus 4·T·H per token and layer (QKᵀ and AV over T keys), on the
episode's real (unpadded) tokens, times 2 for the backward pass (a frozen backbone needs
input gradients only; ×3 with a trainable backbone), over (inner steps × support + query)
tokens: the passes of first-order meta-training. Second order does more work than this
count (Hessian-vector products, kept graphs), which shows as a lower fraction.

    python experiments/bench_scale.py                                # CPU: MiniLM, seq 64, 1 vs 2 processes
    python experiments/bench_scale.py --device cuda --models minilm-offline bert-base-random bert-large-random \\
        --seq 64 128 256 --processes 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.run.provenance import proc_status_mb  # noqa: E402

ORDERS = {"first": "fomaml", "second": "maml"}


def model_dir(name: str) -> str:
    if name == "minilm-offline":
        return name
    sys.path.insert(0, str(ROOT / "experiments"))
    from bench_engines import random_model_dir

    return random_model_dir(name)


def encoder_flops_per_token(config, keys: float) -> float:
    """Forward matmul FLOPs of one token through the encoder (see the module docstring)."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (2 * (4 * h * h + 2 * h * f) + 4 * keys * h)


def episode_flops(setup, task, inner_steps: int, trainable_backbone: bool) -> float:
    config = setup.backbone.config
    total = 0.0
    for batch, passes in ((task.support, inner_steps), (task.query, 1)):
        lengths = batch.attention_mask.sum(1).double()
        keys = float((lengths * lengths).sum() / lengths.sum())  # mean keys seen by a token
        total += passes * float(lengths.sum()) * encoder_flops_per_token(config, keys)
    return total * (3.0 if trainable_backbone else 2.0)


class CpuPeak:
    """Resident-memory growth of this process (reset through /proc/self/clear_refs)."""

    def reset(self):
        Path("/proc/self/clear_refs").write_text("5")
        self.start = proc_status_mb("VmRSS")

    def read(self) -> float:
        return proc_status_mb("VmHWM") - self.start


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cell(setup, group, cfg, order: str, args) -> dict:
    from metaprompt.meta.algorithms import build_algorithm
    from metaprompt.meta.engines import build_engine
    from metaprompt.run.train import make_optimizer

    cfg.meta.algorithm = ORDERS[order]
    algorithm = build_algorithm(cfg.meta, build_engine(cfg.meta.engine), setup.classifier)
    params = setup.classifier.init_params()
    params.update(algorithm.extra_params(params))
    optimizer = make_optimizer(cfg, params)
    sampler = setup.sampler("train", cfg.seed)
    batch = args.meta_batch
    flops = []

    def outer_step(step: int):
        for p in params.values():
            p.grad = None
        results = {}
        for b in group.slots(batch):
            task = setup.task(sampler.episode(step * batch + b), step * batch + b)
            if step == 0:
                flops.append(episode_flops(setup, task, cfg.meta.inner_steps, not cfg.model.freeze_backbone))
            results[b] = algorithm.accumulate(params, task, step, 10**6, weight=1.0 / batch)
        stats = group.reduce_step(params, results, batch)
        torch.nn.utils.clip_grads_with_norm_([p for p in params.values() if p.grad is not None], 1.0,
                                             stats.norm_tensor)
        optimizer.step()
        return stats

    device = setup.device
    cpu_peak = CpuPeak()
    for step in range(args.warmup):
        outer_step(step)
    _sync(device)
    group.barrier()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        cpu_peak.reset()
    started = time.perf_counter()
    finite = True
    for step in range(args.warmup, args.warmup + args.steps):
        finite &= outer_step(step).finite
    _sync(device)
    seconds = time.perf_counter() - started
    group.barrier()
    seconds = group.maximum(seconds)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        peak_total = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak, peak_total = cpu_peak.read(), float("nan")
    per_episode = sum(flops) / max(1, len(flops))
    return {"order": order, "algorithm": ORDERS[order], "dtype": cfg.model.dtype,
            "tf32": cfg.model.tf32 and device.type == "cuda",
            "episodes_per_second": args.steps * batch / seconds, "seconds_per_outer_step": seconds / args.steps,
            "peak_mb": group.maximum(peak), "peak_total_mb": group.maximum(peak_total),
            "model_gflops_per_episode": group.maximum(per_episode) / 1e9, "finite": finite}


def worker(rank: int, world: int, port: int, args, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
                       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if args.device == "cpu":
        torch.set_num_threads(max(1, args.cpu_threads // world))
    from metaprompt.config import Config
    from metaprompt.run.distributed import init_group
    from metaprompt.run.setup import build_setup, resolve_device

    group = init_group(resolve_device(args.device))
    rows = []
    for model in args.models:
        path = args.model_dirs[model]
        for seq in args.seq:
            overrides = [f"data.dataset={args.dataset}", "data.n_way=5", f"data.k_shot={args.k_shot}",
                         "data.n_query=15", f"data.max_text_tokens={seq}", f"model.max_length={seq}",
                         f"model.name={path}", f"model.freeze_backbone={str(args.frozen).lower()}",
                         f"meta.inner_steps={args.inner_steps}", f"meta.meta_batch={args.meta_batch}",
                         f"model.device={args.device}", f"model.length_buckets={args.length_buckets}",
                         "log.progress=false"]
            try:
                setup = build_setup(Config.load(None, overrides))
            except Exception as err:  # noqa: BLE001 - a benchmark records the failure and goes on
                rows.append({"model": model, "seq_len": seq, "processes": world, "error": repr(err)[:300]})
                continue
            for order in args.orders:
                dtype = args.dtype_first if order == "first" else args.dtype_second
                cfg = Config.load(None, overrides + [f"model.dtype={dtype}"])
                setup.classifier.autocast_dtype = torch.bfloat16 if dtype == "bfloat16" else None
                setup.cfg = cfg
                row = {"model": model, "seq_len": seq, "processes": world,
                       "params_m": sum(p.numel() for p in setup.backbone.encoder.parameters()) / 1e6}
                try:
                    row.update(run_cell(setup, group, cfg, order, args))
                except torch.OutOfMemoryError:
                    row.update({"order": order, "dtype": dtype, "error": "out of GPU memory"})
                    torch.cuda.empty_cache()
                except Exception as err:  # noqa: BLE001
                    row.update({"order": order, "dtype": dtype, "error": repr(err)[:300]})
                    traceback.print_exc()
                rows.append(row)
                if rank == 0:
                    print(json.dumps(row), flush=True)
                    with open(out, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")
            del setup
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    group.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bf16_matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """The GPU's bf16 matmul rate on random data (mean of ``repeats`` after 3 warm-ups)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def table(rows: list[dict], peak_tflops: float | None) -> str:
    head = "| model | params (M) | seq | order | dtype | processes | episodes/s | s/outer step | peak MB |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    if peak_tflops:
        head += " model GFLOP/episode | fraction of bf16 peak |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | {r['seq_len']} | {r.get('order', '-')} | {r.get('dtype', '-')} | "
                         f"{r['processes']} | {r['error']} | | |" + (" | |" if peak_tflops else ""))
            continue
        dtype = r["dtype"] + ("+tf32" if r["dtype"] == "float32" and r.get("tf32") else "")
        line = (f"| {r['model']} | {r['params_m']:.0f} | {r['seq_len']} | {r['order']} | {dtype} | {r['processes']} | "
                f"{r['episodes_per_second']:.2f} | {r['seconds_per_outer_step']:.3f} | {r['peak_mb']:.0f} |")
        if peak_tflops:
            achieved = r["model_gflops_per_episode"] * r["episodes_per_second"] / 1e3
            line += f" {r['model_gflops_per_episode']:.0f} | {100 * achieved / peak_tflops:.1f}% |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-offline"],
                        choices=["minilm-offline", "bert-base-random", "bert-large-random"])
    parser.add_argument("--dataset", default="20news", help="long texts, so every example fills seq_len")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq", type=int, nargs="+", default=[64])
    parser.add_argument("--orders", nargs="+", default=["first", "second"], choices=list(ORDERS))
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtype-first", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--dtype-second", default="float32")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--inner-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed outer steps per cell")
    parser.add_argument("--warmup", type=int, default=1, help="outer steps before timing")
    parser.add_argument("--length-buckets", type=int, default=1)
    parser.add_argument("--frozen", type=lambda v: v.lower() != "false", default=True)
    parser.add_argument("--cpu-threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads in all (divided among the processes)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--name", default=None, help="file name stem (default bench_scale_<device>)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "experiments"))
    from run_study import default_env

    os.environ.update(default_env())  # the data beside the checkout (../shared/data), as run_study.py uses it
    cuda = args.device.startswith("cuda")
    args.dtype_first = args.dtype_first or ("bfloat16" if cuda else "float32")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from metaprompt.run.provenance import provenance

    info = provenance()
    peak = bf16_matmul_tflops() if cuda else None
    if peak:
        print(f"bf16 matmul (8192³, random data): {peak:.0f} TFLOP/s", flush=True)
    args.model_dirs = {model: model_dir(model) for model in args.models}  # random weights: made once
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.processes:
            out = str(Path(tmp) / f"rows{world}.jsonl")
            torch.multiprocessing.spawn(worker, args=(world, _free_port(), args, out), nprocs=world, join=True)
            if Path(out).exists():
                rows += [json.loads(line) for line in Path(out).read_text().splitlines()]
    rows.sort(key=lambda r: (args.models.index(r["model"]), r["seq_len"], r.get("order", ""), r["processes"]))
    text = table(rows, peak)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"bench_scale_{args.device.split(':')[0]}"
    gpu = info["machine"].get("gpu", "CPU")
    header = (f"# Scale benchmark: {args.device} ({gpu})\n\n"
              f"5-way {args.k_shot}-shot, 15 queries/class, {args.inner_steps} inner steps, meta-batch "
              f"{args.meta_batch}, {'frozen' if args.frozen else 'trainable'} backbone, data {args.dataset}, length "
              f"buckets {args.length_buckets}; {args.steps} timed outer steps after {args.warmup} warm-up. First order: "
              f"fomaml in {args.dtype_first}; second order: maml in {args.dtype_second}"
              f"{' (TF32 matmuls)' if cuda and args.dtype_second == 'float32' else ''}. Peak MB: "
              f"{'torch.cuda.max_memory_allocated growth over the timed steps' if cuda else 'resident-memory growth'} "
              f"(largest process).\n"
              + (f"bf16 matmul rate measured in the same run: {peak:.0f} TFLOP/s (8192³, random data).\n" if peak else "")
              + f"Command: `{info['command']}`  \nCommit: `{info['commit']}`  \nMachine: {info['machine']}\n\n")
    (args.out / f"{name}.md").write_text(header + text + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"rows": rows, "bf16_matmul_tflops": peak,
                                                       "provenance": info, "args": vars(args)},
                                                      indent=2, default=str))


if __name__ == "__main__":
    main()
