"""Examples in, batches out: reading a task's split (GLUE TSV files or the hub; own data comes read
by own_data), tokenizing into an Arrow cache, and the batches of training and evaluation."""

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

import glue
from runtime import UsageError, first_line

logger = logging.getLogger("run_glue")


@dataclass(frozen=True)
class DataSource:
    """Where examples come from and how they become features."""

    data_dir: str | None  # None: GLUE from the hub
    cache_dir: str | None
    max_seq_length: int
    overwrite_cache: bool = False
    own: object = None  # own_data.OwnData: examples of own files or a hub dataset, read already

    def read(self, task, split):
        if self.own is not None:
            return self.own.examples[split]
        if self.data_dir is None:
            return hub_examples(task, split, self.cache_dir)
        try:
            return glue.read_split(task, Path(self.data_dir) / task.file_for(split), split)
        except glue.DataError as e:
            raise UsageError(str(e)) from None

    def cache_path(self, task, tokenizer, split):
        """Where the split's features are cached: in --cache_dir, else in the datasets cache
        (HF_DATASETS_CACHE), never next to the data, which may be shared or read-only. None
        (tokenize in memory) when that folder cannot be written, with one warning."""
        root = Path(self.cache_dir) if self.cache_dir else default_cache_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()
        except OSError as e:
            logger.warning("cannot write the feature cache in %s (%s): tokenizing in memory this time",
                           root, e.strerror or type(e).__name__)
            return None
        return root / (f"cached_{split}_{tokenizer_key(tokenizer)}_{self.max_seq_length}_{task.name}_"
                       f"{self.source_key(task, split)}")

    def source_key(self, task, split):
        """Tells data files apart: the same task from another folder, or an edited file, is
        another cache entry."""
        if self.own is not None:
            return f"own-{self.own.key}"
        if self.data_dir is None:
            return f"hub-{task.hub_config}"
        path = (Path(self.data_dir) / task.file_for(split)).resolve()
        stat = path.stat()
        return hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]


def default_cache_root():
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "pabee-features"


def hub_examples(task, split, cache_dir=None):
    """GLUE from the hub (nyu-mll/glue), turned into the same columns as the TSV reader."""
    import datasets

    hub_split = {"train": "train", "dev": task.hub_dev_split, "test": task.hub_test_split}[split]
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retries would print before our one line
    try:
        data = datasets.load_dataset("nyu-mll/glue", task.hub_config, split=hub_split, cache_dir=cache_dir)
    except Exception as e:  # offline, unknown config, broken cache: all end the same way
        raise UsageError(
            f"cannot load GLUE {task.folder} from the hub ({first_line(e)}): pass --data_dir <folder with its TSV files>"
        ) from None
    a, b = task.hub_columns
    if split == "test":
        labels = [None] * len(data)
    elif task.is_regression:
        labels = [float(v) for v in data["label"]]
    else:  # the hub names MNLI's classes in another order; "0"/"1" tasks keep their integers
        names = data.features["label"].names
        by_name = set(names) == set(task.labels)
        labels = [task.labels.index(names[v]) if by_name else v for v in data["label"]]
    return {"text_a": data[a], "text_b": data[b] if b else [None] * len(data), "label": labels,
            "index": [str(i) for i in data["idx"]]}


def tokenizer_key(tokenizer):
    """Names what the tokenizer does, not where it lives: a checkpoint's copy hits the cache.
    Truncation and padding settings change as the tokenizer is called: they are left out."""
    behaviour = {k: v for k, v in json.loads(tokenizer.backend_tokenizer.to_str()).items()
                 if k not in ("truncation", "padding")}
    identity = json.dumps(behaviour, sort_keys=True) + str(sorted(tokenizer.special_tokens_map.items()))
    return f"{type(tokenizer).__name__}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def prepare_data(source, wanted, tokenizer, runtime):
    """The (task, split) pairs in `wanted`, tokenized: {(task name, split): Dataset}. The files to
    tokenize are all read, and so checked, before anything is tokenized or written."""
    paths = {(t.name, s): source.cache_path(t, tokenizer, s) for t, s in wanted}
    fresh = {(t.name, s): source.read(t, s) for t, s in wanted
             if paths[t.name, s] is None or source.overwrite_cache or not paths[t.name, s].exists()}
    return {(t.name, s): load_features(t, s, tokenizer, source.max_seq_length, paths[t.name, s],
                                       fresh.get((t.name, s)), runtime, source.overwrite_cache)
            for t, s in wanted}


def load_features(task, split, tokenizer, max_seq_length, path, examples, runtime, overwrite=False):
    """Tokenizes `examples` (None: the Arrow cache at `path` is current); rank 0 writes the
    cache, the other processes read it once it is there."""
    import datasets

    features = None
    if examples is not None and (runtime.is_main or path is None):
        features = tokenize(task, split, tokenizer, max_seq_length, examples)
        if path is not None:
            save_features(features, path, overwrite)
    runtime.barrier()
    return features if features is not None else datasets.load_from_disk(str(path))


def save_features(features, path, overwrite):
    """Written under a name of this process's own, then renamed into place: runs that tokenize
    the same split at once never write into each other's files, and the first rename wins (the
    others' copies are equal and dropped). --overwrite_cache replaces the entry."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    features.save_to_disk(str(tmp))
    if overwrite:
        shutil.rmtree(path, ignore_errors=True)
    try:
        tmp.rename(path)
    except OSError:  # another run put its copy there first
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize(task, split, tokenizer, max_seq_length, examples):
    import datasets

    pair = task.text_columns[1] is not None

    def encode(batch):
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True,
                         max_length=max_seq_length, return_token_type_ids=True)  # ALBERT's default omits them

    columns = ["text_a", "text_b"] + (["label"] if split == "test" else [])
    return datasets.Dataset.from_dict(examples).map(encode, batched=True, remove_columns=columns,
                                                    desc=f"Tokenizing {task.name} {split}")


def collate(features, pad_id):
    """Pads a batch to its longest sequence."""
    longest = max(len(f["input_ids"]) for f in features)

    def padded(key, value):
        return torch.tensor([f[key] + [value] * (longest - len(f[key])) for f in features])

    batch = {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0)}
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = padded("token_type_ids", 0)
    if "label" in features[0]:
        batch["labels"] = torch.tensor([f["label"] for f in features])
    return batch


def eval_loader(features, pad_id, batch_size):
    """Batches of similar length, longest first, to cut padding; returns the loader and
    `order`, the dataset index of each example in the order the loader yields them."""
    order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
    loader = DataLoader(features.remove_columns([c for c in ("index",) if c in features.column_names]),
                        batch_size=batch_size, sampler=order.tolist(), collate_fn=lambda f: collate(f, pad_id))
    return loader, torch.as_tensor(order)


def train_loader(features, pad_id, batch_size, runtime, seed):
    """DistributedSampler orders each epoch from seed + epoch, with one process as well: the
    order is reproducible, so a resumed run sees the batches it would have seen."""
    sampler = DistributedSampler(features, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
    loader = DataLoader(features, batch_size=batch_size, sampler=sampler, collate_fn=lambda f: collate(f, pad_id),
                        generator=torch.Generator())  # keeps the global RNG (dropout) untouched
    return loader, sampler


def to_device(batch, device):
    return {k: v.to(device) for k, v in batch.items()}
