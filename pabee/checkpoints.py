"""Checkpoints: a point of a training run to resume from bitwise. A `checkpoint-N` folder holds the
model and tokenizer, the optimizer, scheduler and scaler states, every process's random states, the
run's settings (training_args.json) and where training stood (trainer_state.json). It is written
to a temporary folder and renamed, so a crash never leaves one that looks complete; nothing in it
is unpickled when read (safetensors, JSON, and torch.load with weights_only=True)."""

import logging
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pabee.files import read_json, write_json

logger = logging.getLogger(__name__)

NAME = re.compile(r"checkpoint-(\d+)")


def checkpoint_step(name):
    """The step a checkpoint-N name stands for."""
    return int(NAME.fullmatch(Path(name).name).group(1))


def list_checkpoints(folder):
    """The checkpoint-N folders in `folder`, in the order of their steps."""
    found = [p for p in Path(folder).glob("checkpoint-*") if NAME.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def resume_folder(model_name_or_path):
    """A checkpoint-N folder given as --model_name_or_path resumes training there; else None."""
    path = Path(model_name_or_path)
    if NAME.fullmatch(path.name) and (path / "trainer_state.json").is_file():
        return path
    return None


def training_state(folder):
    """Where training stood: {"global_step", "loss_since_log", "stage" (two-stage regimes)}."""
    return read_json(Path(folder) / "trainer_state.json")


def save_checkpoint(output_dir, step, runtime, model, tokenizer, states, record, trainer_state):
    """checkpoint-`step` in `output_dir`: the model, the tokenizer, `states` ({"optimizer.pt":
    state dict, ...}, written by the main process), every process's RNG state, `record` (the run's
    settings) and `trainer_state`. Written to .checkpoint-N.tmp, then renamed."""
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = Path(output_dir) / f".checkpoint-{step}.tmp"
    if runtime.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, state in states.items():
            torch.save(state, tmp / name)
        write_json(tmp / "training_args.json", record)
        write_json(tmp / "trainer_state.json", trainer_state)
    runtime.barrier()
    save_rng_state(tmp, runtime.rank)
    runtime.barrier()
    if runtime.is_main:
        if final.exists():  # only reachable with --overwrite_output_dir
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("Saved %s", final)
    runtime.barrier()


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
