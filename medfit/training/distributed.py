"""DistributedDataParallel under `torchrun`: process group, rank helpers, failure handling.

`torchrun --nproc-per-node N -m medfit train ...` starts N copies of medfit with RANK, WORLD_SIZE
and LOCAL_RANK in the environment; `launched()` reads them and `start()` joins the process group
(NCCL on CUDA, Gloo on CPU). Without those variables every helper here is a no-op, so the single
process runs exactly the code it always ran.

Division of work: every rank trains on its shard of each global batch (medfit.data.loader), DDP
averages the gradients; rank 0 alone builds the cache, evaluates, writes the run directory and
decides early stopping, while the others wait for it (`main_first`, `on_main`). Small control
messages (metric sums, decisions, errors) travel over a Gloo group on the CPU even when training
uses NCCL, so they never touch the GPUs' streams.

Failures: an error on rank 0 inside `main_first`/`on_main` is sent to every rank, which all stop
with its message. An error anywhere else ends that rank's process, which closes its connections;
the other ranks' next collective then fails (Gloo: at once; NCCL: torchrun's agent stops the
remaining workers as soon as one exits non-zero, and the process-group timeout bounds the rest).

Multi-run jobs (--seeds, --folds): each fit joins and leaves its own process group; between
runs the ranks meet in a short Gloo group (`joined`) to follow rank 0's decisions (`on_main`) and
to agree whether a run failed on any rank (`attempt_run`, `first_failure`), so that every rank
takes the same steps and no rank waits for a run another skipped.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medfit.errors import ConfigError, MedfitError

T = TypeVar("T")

# How long the other ranks wait while rank 0 works alone (decoding a large data set into the cache,
# evaluating a large val split). Generous because a first cache build of 100k+ full-size images
# can take hours on rank 0; a rank that *dies* is noticed at once (its connections close), so this
# only bounds a rank that hangs without dying.
MAIN_WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: rank 0 of 1 for a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()
_cpu_group: Any = None  # Gloo group for control messages (the default group when it is Gloo)
_joins = 0  # process groups this process has started: the same count on every rank


class RankStopped(MedfitError):
    """This rank stopped because another rank failed (or left): the other's error is the cause."""


def rank_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on rank 0, silence on the other torchrun ranks: one voice per job."""
    return log if launched().is_main else _quiet


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""


def launched() -> DistContext:
    """The rank/world size torchrun (or any launcher using its variables) gave this process."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    raw = {name: os.environ.get(name) for name in names}
    if raw["WORLD_SIZE"] is None:
        return SINGLE
    try:
        world = int(raw["WORLD_SIZE"] or 1)
        rank = int(raw["RANK"] or 0)
        local = int(raw["LOCAL_RANK"] or rank)
    except ValueError:
        raise ConfigError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got {raw}; launch with torchrun"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is outside WORLD_SIZE {world}; launch with torchrun")
    return DistContext(rank, world, local)


def device_for(ctx: DistContext, name: str) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is asked for (or auto and present), else the CPU (Gloo)."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {ctx.local_rank} but only {torch.cuda.device_count()} GPU(s) "
                "visible; lower torchrun's --nproc-per-node"
            )
        return torch.device("cuda", ctx.local_rank)
    if name in ("auto", "cpu"):
        return torch.device("cpu")
    raise ConfigError(
        f"--device {name} cannot be used with torchrun: use cuda (each rank takes "
        "cuda:LOCAL_RANK), cpu or auto"
    )


def start(ctx: DistContext, device: torch.device) -> None:
    """Join the process group torchrun's rendezvous describes (MASTER_ADDR/PORT, env://)."""
    global _cpu_group
    if not ctx.enabled:
        return
    store = _fresh_store(ctx)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl", store=store, rank=ctx.rank, world_size=ctx.world_size, device_id=device
        )
        _cpu_group = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo", store=store, rank=ctx.rank, world_size=ctx.world_size)
        _cpu_group = None


def _fresh_store(ctx: DistContext) -> dist.Store:
    """The rendezvous store under a key prefix of its own for this group.

    torchrun's store outlives a process group, and PyTorch names every default group alike, so
    a second group would read the addresses the ranks left in the store for the first, whose
    sockets are closed: its start hung or failed ("Connection refused"), e.g. `--seeds 2` at the
    second seed. Every rank starts its groups in the same order (a multi-run job's ranks take
    the same steps), so the count names the same group on each.
    """
    global _joins
    _joins += 1
    store, _, _ = next(dist.rendezvous("env://", ctx.rank, ctx.world_size))
    return dist.PrefixStore(f"medfit/{_joins}", store)


@contextmanager
def joined() -> Iterator[None]:
    """Every rank in a short Gloo group for the block, between runs (fit holds its own while it
    trains), so that `on_main`, `first_failure` and the rest work there; a no-op in one process."""
    start(launched(), torch.device("cpu"))
    try:
        yield
    finally:
        stop()


def stop() -> None:
    """Leave the process group; on a failing rank this closes the connections peers wait on."""
    global _cpu_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _cpu_group = None


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier(timeout: timedelta = MAIN_WAIT) -> None:
    """Wait for every rank; a rank that has left makes this fail instead of hang."""
    if dist.is_initialized():
        dist.monitored_barrier(group=_cpu_group, timeout=timeout)


def all_reduce_sums(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (float64: exact for counts, stable for loss sums)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_cpu_group)
    return [float(v) for v in tensor]


def all_true(flag: bool) -> bool:
    """True on every rank only if `flag` is True on every rank (e.g. "this step's loss is finite":
    a step skipped on one rank and taken on another would desynchronise DDP's all-reduces)."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=_cpu_group)
    return bool(tensor.item())


def gather_objects(obj: T) -> list[T]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    objects: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj, group=_cpu_group)
    return objects


@dataclass(frozen=True)
class Failure:
    """A run's error as the ranks compare it: picklable, and holding nothing of the run."""

    text: str  # "Type: message"
    follows: bool  # a RankStopped: this rank stopped only because another one failed


def attempt_run(fn: Callable[[], T]) -> tuple[T | None, Failure | None]:
    """`fn()` (a whole run: fit joins and leaves its process group), or the Failure it raised.

    The error itself is dropped and collected before this returns: through its traceback a failed
    run still holds its DDP model and so its process group, whose sockets then stay open, and the
    ranks still inside that run (waiting on this one in an all-reduce) fail only once they close.
    A rank that goes on to the next run must let go of the last one.
    """
    try:
        return fn(), None
    except Exception as exc:
        failure = Failure(f"{type(exc).__name__}: {exc}", isinstance(exc, RankStopped))
    gc.collect()
    return None, failure


def first_failure(failure: Failure | None) -> str | None:
    """The error that stopped a run, the same on every rank (each rank's, gathered), or None when
    no rank failed: the lowest rank's own error, before any rank's that only followed it (which
    would record "another rank failed" instead of the cause)."""
    failed = [f for f in gather_objects(failure) if f is not None]
    failed.sort(key=lambda f: f.follows)  # stable: the causes first, each group in rank order
    return failed[0].text if failed else None


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` (picklable) on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_cpu_group)
    return box[0]


def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers (e.g. re-estimated BN statistics) to every rank."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only while the others wait; every rank gets its result or its error."""
    if not dist.is_initialized():
        return fn()
    result, error = _attempt(fn) if is_main() else (None, None)
    _share_error(error)
    return broadcast_object(result)  # type: ignore[return-value]


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then (if it worked) on the others: e.g. build the cache once, then all
    ranks open it; download weights once, then all ranks read them from the local cache."""
    if not dist.is_initialized():
        return fn()
    if is_main():
        result, error = _attempt(fn)
        _share_error(error)
        return result  # type: ignore[return-value]
    _share_error(None)
    return fn()


def _attempt(fn: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    try:
        return fn(), None
    except Exception as exc:  # re-raised on rank 0 by _share_error, after the others know
        return None, exc


def _share_error(error: BaseException | None) -> None:
    """Rank 0's error (or None) reaches every rank; all raise it, so none waits forever."""
    barrier()
    message = broadcast_object(_one_line(error) if error is not None else None)
    if error is not None:
        raise error
    if message is not None:
        raise RankStopped(f"rank 0 failed, stopping rank {dist.get_rank()} too: {message}")


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(error, MedfitError) else f"{type(error).__name__}: {first}"


def rank_error(ctx: DistContext, error: Exception) -> Exception:
    """What a rank reports when it stops: its own one-line error named by rank.

    A collective that failed because a peer left becomes a one-line MedfitError pointing at the
    peer's message; a bug keeps its traceback (returned unchanged).
    """
    where = f"rank {ctx.rank}/{ctx.world_size}"
    if isinstance(error, RankStopped):
        return RankStopped(f"{where}: {error}")
    if isinstance(error, MedfitError):
        return MedfitError(f"{where}: {error}")
    if isinstance(error, dist.DistError) or _peer_gone(error):
        first = (str(error).strip().splitlines() or [""])[0]
        return RankStopped(
            f"{where}: stopped because another rank failed or left (its error is above): {first}"
        )
    print(f"medfit: {where} failed: {_one_line(error)}", file=sys.stderr, flush=True)
    return error


def _peer_gone(error: Exception) -> bool:
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training step calls: DDP around `model` when distributed, else `model`.

    Built per stage, after the stage's parameters are (un)frozen: DDP registers the parameters
    that require grad when it is built, and it copies rank 0's weights and buffers to every rank.
    """
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """BatchNorm (incl. timm's BatchNormAct) -> SyncBatchNorm: statistics over the global batch."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def unwrap(net: nn.Module) -> None:
    """Detach a stage's DDP wrapper from the parameters before the next stage builds its own,
    so an old reducer's gradient hooks can never fire (and all-reduce) during the next stage."""
    net = getattr(net, "_orig_mod", net)  # torch.compile's wrapper around the DDP one
    remove = getattr(net, "_remove_autograd_hooks", None)
    if isinstance(net, DistributedDataParallel) and callable(remove):
        remove()
