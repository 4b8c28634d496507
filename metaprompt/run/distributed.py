"""Meta-batches split over processes with ``torch.distributed`` (``torchrun``, ``accelerate launch``).

Each process runs a share of the tasks of every meta-batch; their meta-gradients are summed
over processes, so every process holds the gradient of the whole meta-batch and takes the
same optimiser step (the parameters stay identical without being sent around)::

    torchrun --nproc_per_node 4 -m metaprompt train --config configs/demo.yaml --out runs/x
    accelerate launch --num_processes 4 -m metaprompt train --config configs/demo.yaml --out runs/x

The work is split so that a run's result does not depend on the number of processes:

- the tasks of outer step ``s`` are the training episodes ``s·B + b`` (``B = meta.meta_batch``),
  whatever the world size; process ``r`` of ``W`` runs the ``b ≡ r (mod W)``, weighted
  ``1/B`` (of the *global* meta-batch), and one all-reduce sums the weighted gradients;
- validation episodes are split the same way and their accuracies summed into one list, so
  early stopping and the best init are decided on the same numbers everywhere;
- rank 0 alone writes (config, metrics, checkpoints, best init, summary, progress bar,
  wandb); the others wait for it at barriers; on ``--resume`` every process reads the
  checkpoint rank 0 wrote.

The process group comes from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``: what torchrun and accelerate set): NCCL when each process has
a GPU of its own, Gloo otherwise (CPU, or several processes sharing one GPU); the variable
``METAPROMPT_DIST_BACKEND`` forces one. Without those variables everything here is a no-op
for a single process.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist

__all__ = ["Group", "StepStats", "init_group", "local_cuda_index", "is_main_process"]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def is_main_process() -> bool:
    """Rank 0 (or no distributed launch at all): the process that prints and writes."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


def local_cuda_index() -> int:
    """The GPU of this process: ``LOCAL_RANK`` modulo the visible GPUs (processes may share one)."""
    count = torch.cuda.device_count()
    return _env_int("LOCAL_RANK", 0) % count if count else 0


def _backend(device: torch.device) -> str:
    forced = os.environ.get("METAPROMPT_DIST_BACKEND")
    if forced:
        return forced
    if device.type == "cuda" and torch.cuda.device_count() >= _env_int("LOCAL_WORLD_SIZE", 1):
        return "nccl"
    return "gloo"  # CPU; and NCCL refuses two ranks on one GPU


@dataclass
class StepStats:
    """One outer step, as every process sees it after the reduction."""

    losses: list[float]  # per task of the meta-batch (index b)
    accuracies: list[float]
    grad_norm: float  # L2 norm of the whole meta-gradient (inf/nan: something was non-finite)
    finite: bool  # losses and meta-gradient all finite
    norm_tensor: torch.Tensor | None = None  # the same norm on the device (for clipping without a re-read)


class Group:
    """This process's place in a (possibly one-process) run."""

    def __init__(self, rank: int = 0, world_size: int = 1, backend: str | None = None,
                 device: torch.device | None = None, owns_group: bool = False):
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self.device = device or torch.device("cpu")
        self.owns_group = owns_group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}

    # -- work split -------------------------------------------------------------------------------
    def slots(self, count: int) -> range:
        """The indices ``b`` in ``range(count)`` this process runs (``b ≡ rank mod world_size``)."""
        return range(self.rank, count, self.world_size)

    # -- synchronisation --------------------------------------------------------------------------
    def barrier(self) -> None:
        if not self.enabled:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes a cache), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def agree(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on rank 0; if it raises, every process raises the same error (so no process
        is left waiting at a collective for a rank that gave up)."""
        error: BaseException | None = None
        if self.is_main:
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
                error = err
        if not self.enabled:
            if error is not None:
                raise error
            return
        text = "" if error is None else f"{type(error).__module__}:{type(error).__qualname__}:{error}"
        text = self._broadcast_text(text)
        if error is not None:
            raise error
        if text:
            module, name, message = text.split(":", 2)
            raise _rebuild(module, name, message)

    # -- reductions -------------------------------------------------------------------------------
    def _all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """All-reduce on the backend's device (Gloo: through the host), result on ``tensor``'s device."""
        op = op or dist.ReduceOp.SUM
        if self.backend == "gloo" and tensor.device.type != "cpu":
            staged = tensor.cpu()
            dist.all_reduce(staged, op=op)
            return staged.to(tensor.device)
        if self.backend == "nccl" and tensor.device.type != "cuda":
            staged = tensor.to(self.device)
            dist.all_reduce(staged, op=op)
            return staged.to(tensor.device)
        dist.all_reduce(tensor, op=op)
        return tensor

    def _broadcast_text(self, text: str) -> str:
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.long, device=device)
        dist.broadcast(size, src=0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
        if self.is_main:
            buffer.copy_(data)
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().tolist()).decode("utf-8")

    def reduce_step(self, params: Mapping[str, torch.Tensor], results: Mapping[int, Any],
                    meta_batch: int) -> StepStats:
        """Finish an outer step: sum the meta-gradients (``p.grad``) over processes and read the
        meta-batch's losses, accuracies and gradient norm, with one host-device round trip.

        ``results``: this process's tasks, ``{b: TaskResult}`` (loss and accuracy as 0-dim
        tensors or floats). Gradients must already be weighted ``1/meta_batch``. A parameter
        that no process gave a gradient keeps ``grad = None`` (the optimiser then leaves it
        alone, as in a single process)."""
        leaves = [p for p in params.values() if p.requires_grad]
        device = leaves[0].device if leaves else torch.device("cpu")
        stats = torch.zeros(2 * meta_batch, dtype=torch.float32, device=device)
        for b, result in results.items():
            stats[b] = _as_tensor(result.loss, device)
            stats[meta_batch + b] = _as_tensor(result.accuracy, device)
        if self.enabled:
            dtype = leaves[0].dtype if len({p.dtype for p in leaves}) == 1 else torch.float64
            parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in leaves]
            flags = torch.tensor([float(p.grad is not None) for p in leaves], dtype=dtype).to(device)
            flat = self._all_reduce(torch.cat(parts + [flags, stats.to(dtype)]))
            offset = 0
            for p in leaves:
                p.grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
            flags, stats = flat[offset:offset + len(leaves)].float(), flat[offset + len(leaves):].float()
        else:
            flags = None
        grads = [p.grad for p in leaves if p.grad is not None]
        norm = (torch.nn.utils.get_total_norm(grads, 2.0) if grads
                else torch.zeros((), device=device))
        summary = torch.cat([norm.reshape(1).float().to(device), stats] + ([flags] if flags is not None else []))
        values = summary.tolist()  # the one read of the step
        grad_norm, values = values[0], values[1:]
        losses, accuracies = values[:meta_batch], values[meta_batch:2 * meta_batch]
        if flags is not None:
            for p, flag in zip(leaves, values[2 * meta_batch:]):
                if flag == 0.0:
                    p.grad = None
        finite = all(map(_finite, losses)) and _finite(grad_norm)
        return StepStats(losses, accuracies, grad_norm, finite, norm)

    def gather(self, values: Mapping[int, float], count: int) -> list[float]:
        """Merge ``{index: value}`` of every process into the full list (each index set by one)."""
        if not self.enabled:
            return [values[i] for i in range(count)]
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        merged = torch.zeros(count, dtype=torch.float64, device=device)
        for index, value in values.items():
            merged[index] = float(value)
        return self._all_reduce(merged).tolist()

    def maximum(self, value: float) -> float:
        if not self.enabled:
            return value
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        return float(self._all_reduce(torch.tensor([float(value)], dtype=torch.float64, device=device),
                                      dist.ReduceOp.MAX).item())

    def close(self) -> None:
        """Leave the process group if this module created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _as_tensor(value, device: torch.device) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        return value.detach().float().to(device)
    return float(value)  # a host float: filled in without a device copy


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _rebuild(module: str, name: str, message: str) -> BaseException:
    """The exception rank 0 raised, rebuilt on another rank (its message only)."""
    try:
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    except Exception:  # noqa: BLE001 - any failure falls back to a plain error
        pass
    return RuntimeError(f"{module}.{name}: {message}")


def init_group(device: torch.device, timeout_minutes: float = 30.0) -> Group:
    """The process group of a ``torchrun``/``accelerate`` launch (created if needed), or a
    one-process :class:`Group` when ``WORLD_SIZE`` is unset or 1."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Group(device=device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    owns = False
    if dist.is_initialized():
        backend = dist.get_backend()
    else:
        backend = _backend(device)
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://",
                                  "timeout": datetime.timedelta(minutes=timeout_minutes)}
        if backend == "nccl":
            torch.cuda.set_device(device)
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
    return Group(dist.get_rank(), dist.get_world_size(), backend, device, owns)
