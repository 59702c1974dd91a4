"""The names inside a run folder that training, scoring and the grid all read: `checkpoint-N`
folders, their steps, and whether a --model_name_or_path is one to resume from (the checkpoints
themselves: pabee/fine_tuning/checkpoints.py)."""

import re
from pathlib import Path

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
