"""Where a run executes, decided once: `Runtime` (device, processes, rank, precision; torchrun's
process group), and the seeding of every random generator.

torch is imported where a runtime starts, not here: flag checks and --help stay instant."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pabee.base.errors import UsageError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Runtime:
    device: "torch.device"
    n_gpu: int  # GPUs this process drives (DataParallel when > 1 without torchrun)
    rank: int = 0
    world_size: int = 1
    local_rank: int = -1  # -1: not launched by torchrun
    amp_dtype: "torch.dtype | None" = None

    @property
    def distributed(self):
        return self.local_rank != -1

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def data_parallel(self):
        return self.n_gpu > 1 and not self.distributed

    def barrier(self):
        if self.distributed:
            import torch

            torch.distributed.barrier()

    def synchronize(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def shut_down(self):
        if self.distributed:
            import torch

            torch.distributed.destroy_process_group()


def start_runtime(wanted):
    """The runtime that `wanted` (run_settings.DeviceSettings) asks for; joins torchrun's process group
    when launched by it (LOCAL_RANK wins over --local_rank)."""
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", wanted.local_rank))
    if (wanted.fp16 or wanted.bf16) and (wanted.no_cuda or not torch.cuda.is_available()):
        flag = "--fp16" if wanted.fp16 else "--bf16"
        raise UsageError(f"{flag} needs a CUDA GPU: none is available here, drop {flag} to run in float32")
    amp_dtype = torch.float16 if wanted.fp16 else torch.bfloat16 if wanted.bf16 else None
    use_cuda = torch.cuda.is_available() and not wanted.no_cuda
    if local_rank == -1:
        device = torch.device("cuda" if use_cuda else "cpu")
        return Runtime(device, torch.cuda.device_count() if use_cuda else 0, amp_dtype=amp_dtype)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"), 1 if use_cuda else 0,
                   torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, amp_dtype)


def set_seed(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
