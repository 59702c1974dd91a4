"""Checkpoints: a point of a training run to resume from bitwise. A `checkpoint-N` folder holds the
model and tokenizer, the optimizer, scheduler and scaler states, every process's random states, the
run's settings (training_args.json) and where training stood (trainer_state.json). It is written
to a temporary folder and renamed, so a crash never leaves one that looks complete; nothing in it
is unpickled when read (safetensors, JSON, and torch.load with weights_only=True)."""

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pabee.base.errors import UsageError, first_line
from pabee.base.file_io import describe_missing, read_json, write_json
from pabee.base.run_folder import checkpoint_step, list_checkpoints
from pabee.modeling.saved_folder import save_folder

logger = logging.getLogger(__name__)


def training_state(folder):
    """Where training stood: {"global_step", "loss_since_log", "stage" (two-stage regimes)}."""
    return read_json(Path(folder) / "trainer_state.json")


def save_checkpoint(output_dir, step, runtime, model, tokenizer, states, record, trainer_state):
    """checkpoint-`step` in `output_dir`: the model, the tokenizer, `states` ({"optimizer.pt":
    state dict, ...}, written by the main process), every process's RNG state, `record` (the run's
    settings) and `trainer_state`. Written to .checkpoint-N.tmp, then renamed; when the disk refuses
    a write, the partial folder goes and the error names the disk and the last complete checkpoint."""
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = Path(output_dir) / f".checkpoint-{step}.tmp"
    if runtime.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_folder(model, tokenizer, tmp)
            for name, state in states.items():
                torch.save(state, tmp / name)
            write_json(tmp / "training_args.json", record)
            write_json(tmp / "trainer_state.json", trainer_state)
        except Exception as e:  # torch's zip writer, safetensors and the file system each raise their own kind
            shutil.rmtree(tmp, ignore_errors=True)
            raise UsageError(save_failure(output_dir, step, e)) from None
    runtime.barrier()
    save_rng_state(tmp, runtime.rank)
    runtime.barrier()
    if runtime.is_main:
        if final.exists():  # only reachable with --overwrite_output_dir
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("Saved %s", final)
    runtime.barrier()


def save_failure(output_dir, step, error):
    """What to say when checkpoint-`step` could not be written: the cause, the disk's free space and
    where to resume from."""
    free = shutil.disk_usage(output_dir).free
    last = list_checkpoints(output_dir)
    resume = (f"the last complete checkpoint is {last[-1]}: resume from it with --model_name_or_path {last[-1]} "
              f"--output_dir {output_dir} --overwrite_output_dir" if last else "no checkpoint is complete yet: start again")
    return (f"cannot write checkpoint-{step} in {output_dir} ({first_line(error)}); its disk has {free / 2**20:.0f} MiB "
            f"free: free space there, then {resume}")


def check_resumable(folder):
    """A checkpoint to resume from: every file of it reads back, else a UsageError naming the
    damaged file and the previous complete checkpoint."""
    damaged = damage(folder)
    if damaged is None:
        return
    earlier = [c for c in list_checkpoints(Path(folder).parent) if checkpoint_step(c) < checkpoint_step(folder)]
    previous = next((c for c in reversed(earlier) if damage(c) is None), None)
    advice = (f"resume from the previous complete checkpoint with --model_name_or_path {previous}" if previous
              else "no earlier checkpoint is complete: start from the model instead")
    raise UsageError(f"{Path(folder) / damaged[0]} {damaged[1]}: {advice}")


ESSENTIAL = ("config.json", "trainer_state.json", "training_args.json", "optimizer.pt", "scheduler.pt",
             "rng_state_0.safetensors", "rng_state_0.json")


def damage(folder):
    """(file, what is wrong with it) for the first file of a checkpoint that is missing or does not
    read back (JSON parsed, safetensors headers and torch zip archives opened), or None."""
    folder = Path(folder)
    weights = "model.safetensors.index.json" if (folder / "model.safetensors.index.json").exists() else "model.safetensors"
    for name in ESSENTIAL + (weights,):
        if not (folder / name).is_file():
            return name, describe_missing(folder / name)
    readers = {".json": read_json, ".safetensors": safetensors_keys,
               ".pt": lambda p: torch.load(p, map_location="cpu", weights_only=True, mmap=True)}
    for path in sorted(folder.iterdir()):
        if path.suffix in readers:
            try:
                readers[path.suffix](path)
            except Exception as e:  # every reader raises its own kind on a damaged file
                return path.name, f"is damaged ({first_line(e)})"
    state = read_json(folder / "trainer_state.json")
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json", "is damaged (no global_step)"
    return None


def safetensors_keys(path):
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def load_states(folder, runtime, optimizer, scheduler, scaler):
    """Loads what save_checkpoint wrote of the optimizer, scheduler and scaler, and the RNG states."""
    folder = Path(folder)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=runtime.device, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if scaler and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    restore_rng(folder, runtime)


def save_rng_state(folder, rank):
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(folder / f"rng_state_{rank}.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    write_json(folder / f"rng_state_{rank}.json",
               {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]})


def restore_rng(folder, runtime):
    folder = Path(folder)
    tensors = load_file(str(folder / f"rng_state_{runtime.rank}.safetensors"))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    states = read_json(folder / f"rng_state_{runtime.rank}.json")
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
