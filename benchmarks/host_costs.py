"""What the host does during inference, which sets the pace on a GPU: operators dispatched and the
reads after which the host waits for the device, counted while the exit engine runs."""

import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pabee.early_exit import flow  # noqa: E402
from pabee.early_exit.engine import Shapes, stream  # noqa: E402
from pabee.early_exit.rules import PatienceRule  # noqa: E402
from engine_figures import infer, unpadded  # noqa: E402
from workload import PATIENCE  # noqa: E402


class Dispatched(TorchDispatchMode):
    """Counts the operators dispatched (each a kernel launch on a GPU, or more) and the reads after
    which the host waits for the device: values read back, data-dependent sizes, tolist."""

    WAITING = ("aten.nonzero", "aten._local_scalar_dense", "aten.masked_select", "aten.is_nonzero")

    def __init__(self):
        super().__init__()
        self.operators = self.waits = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.operators += 1
        self.waits += str(func).startswith(self.WAITING)
        return func(*args, **(kwargs or {}))


def counted(model, batches, rule):
    """(operators, host waits) of the exit engine over `batches` at inference: operations whose
    result the host must wait for, tolist, the engine's reads of the rows' waits (flow.finish_read)
    and one read of the answers per Answered."""
    streams = [(unpadded(b), b["input_ids"].shape[1]) for b in batches]
    tolist, finish_read = torch.Tensor.tolist, flow.finish_read
    with torch.inference_mode(), Dispatched() as mode:
        torch.Tensor.tolist = lambda t: (setattr(mode, "waits", mode.waits + 1), tolist(t))[1]
        flow.finish_read = lambda c: (setattr(mode, "waits", mode.waits + 1), finish_read(c))[1]
        try:
            for examples, length in streams:
                for _ in stream(model, rule, [examples], Shapes.of(len(examples), length), pad_id=0):
                    mode.waits += 1
        finally:
            torch.Tensor.tolist, flow.finish_read = tolist, finish_read
    return mode.operators, mode.waits


def host_costs(model, bs1, bs32, device):
    """What the host does, which sets the pace on a GPU: host waits per batch of patience
    inference, and operators dispatched per layer at full depth (CUDA: kernels launched per layer,
    from the profiler)."""
    layers, early = model.config.num_hidden_layers, PatienceRule(PATIENCE)
    results = {}
    for name, batches in (("bs1", bs1), ("bs32", bs32)):
        results[f"host_waits_per_batch_{name}"] = counted(model, batches, early)[1] / len(batches)
        results[f"operators_per_layer_{name}"] = counted(model, batches, PatienceRule(0))[0] / len(batches) / layers
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            infer(model, bs1, PatienceRule(0))
            torch.cuda.synchronize()
        kernels = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")
        results["kernels_per_layer_bs1"] = kernels / len(bs1) / layers
    return results


