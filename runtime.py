"""What a run is, decided once from the flags and never changed after: where it runs (`Runtime`:
device, processes, precision) and what it evaluates (`ExitPlan`: tasks, exit criterion and its
settings). Every other module takes these instead of the parsed flags.

torch is imported where a runtime starts, not here: flag checks and --help stay instant."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from exit_rules import make_rule


class UsageError(Exception):
    """Bad input: the message names the problem and the fix (one line, exit code 2)."""


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def write_json(path, value):
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


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


def start_runtime(no_cuda=False, fp16=False, bf16=False, local_rank=-1):
    """Joins torchrun's process group when launched by it (LOCAL_RANK wins over --local_rank)."""
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", local_rank))
    if (fp16 or bf16) and (no_cuda or not torch.cuda.is_available()):
        flag = "--fp16" if fp16 else "--bf16"
        raise UsageError(f"{flag} needs a CUDA GPU: none is available here, drop {flag} to run in float32")
    amp_dtype = torch.float16 if fp16 else torch.bfloat16 if bf16 else None
    use_cuda = torch.cuda.is_available() and not no_cuda
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


@dataclass(frozen=True)
class ExitPlan:
    """The task trained on, the tasks evaluated (MNLI: matched and mismatched), and the exit
    settings every evaluation reports."""

    task: object  # glue.Task
    eval_tasks: tuple
    criterion: str
    settings: tuple
    regression_threshold: float = 0.0

    def rule(self, setting):
        return make_rule(self.criterion, setting, self.regression_threshold)
