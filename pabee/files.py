"""Small file helpers shared by the writers of results, checkpoints and caches."""

import json
from pathlib import Path


def write_json(path, value):
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())
