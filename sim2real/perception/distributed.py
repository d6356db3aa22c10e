"""Data-parallel pretraining under ``torchrun``: PyTorch's own ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m sim2real pretrain ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :meth:`Distributed.from_env` reads them, joins the
process group (gloo on CPU, NCCL on CUDA, chosen from the device) and gives each process its
device. Without those variables it is the single-process case and changes nothing.

What each process does:

- **data**: the epoch's permutation (seeded by ``(seed, epoch)``, the same in every
  process) is dealt out round-robin: rank ``r`` reads positions ``r, r + N, r + 2N, ...``, so
  the ranks' batch ``k`` together are the single-process batch ``k`` of ``N x batch_size``
  images (``batch_size`` is per process). The epoch is padded by repeating its first samples
  so every rank has the same number of batches (as ``DistributedSampler`` does).
- **gradients**: averaged over the ranks by DDP after each backward, so one DDP step equals
  one single-process step on the union of the ranks' batches when the loss is a batch mean
  and there is no BatchNorm in training mode.
- **BatchNorm**: on CUDA its layers become ``SyncBatchNorm`` (statistics over the global
  batch); on CPU (gloo) ``SyncBatchNorm`` is not available, so each process normalises with
  its own batch's statistics and DDP broadcasts rank 0's running statistics at each forward.
- **writing**: only rank 0 writes checkpoints, the card, ``metrics.csv`` and TensorBoard;
  every rank validates on the whole validation split (the weights are identical), so they
  agree on when to stop; the time budget (``max_minutes``) is rank 0's clock, broadcast.

Example:
    >>> Distributed.from_env(environ={}).world_size
    1
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sim2real.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (``world_size`` 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(
        cls, device: str | torch.device = "cpu", environ: Mapping[str, str] | None = None
    ) -> Distributed:
        """Read ``torchrun``'s variables and join its process group (a no-op without them)."""
        env = os.environ if environ is None else environ
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", "0"))
        except ValueError as exc:
            raise ConfigError(
                f"torchrun variables WORLD_SIZE={env.get('WORLD_SIZE')!r} "
                f"RANK={env.get('RANK')!r} LOCAL_RANK={env.get('LOCAL_RANK')!r}: expected integers"
            ) from exc
        if world <= 1:
            return cls()
        if not 0 <= rank < world:
            raise ConfigError(f"RANK={rank}: expected 0 <= RANK < WORLD_SIZE={world}")
        kind = torch.device(device).type
        backend = "nccl" if kind == "cuda" else "gloo"
        if not torch.distributed.is_initialized():
            if kind == "cuda":
                torch.cuda.set_device(local)
            torch.distributed.init_process_group(backend=backend)
            logger.info("DDP: rank %d of %d (%s)", rank, world, backend)
        if rank != 0:  # one log, from rank 0; the others still warn
            logging.getLogger("sim2real").setLevel(logging.WARNING)
        return cls(rank, world, local, backend)

    def device(self, device: str | torch.device) -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` on CUDA, else ``device`` itself."""
        dev = torch.device(device)
        if self.enabled and dev.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return dev

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (SyncBatchNorm on CUDA), or as it is."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            return DistributedDataParallel(module, device_ids=[device.index])
        return DistributedDataParallel(module)

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` in every process."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch.distributed.broadcast(t, src=0)
        return float(t.item())

    def mean_float(self, value: float) -> float:
        """The mean of ``value`` over the processes."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group (after the last collective)."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _comm_device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def shard_order(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of an epoch's ``order``: every ``world_size``-th position from
    ``rank``, after padding ``order`` with its first items to a multiple of ``world_size``.

    >>> shard_order(torch.arange(5), 0, 2).tolist(), shard_order(torch.arange(5), 1, 2).tolist()
    ([0, 2, 4], [1, 3, 0])
    """
    if world_size <= 1:
        return order
    pad = (-len(order)) % world_size
    if pad:
        order = torch.cat([order, order[:pad]])
    return order[rank::world_size]
