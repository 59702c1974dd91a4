"""Examples in, batches out: a source's splits tokenized into an Arrow cache (shared by runs and
processes), and the batches of training and evaluation."""

import hashlib
import json
import logging
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from pabee.early_exit.batch_rows import collate

logger = logging.getLogger(__name__)


def prepare_features(source, wanted, tokenizer, max_seq_length, runtime, cache_dir=None, overwrite=False):
    """The (task, split) pairs in `wanted`, tokenized: {(task name, split): Dataset}. The examples to
    tokenize are all read, and so checked, before anything is tokenized or written."""
    root = cache_root(cache_dir)
    paths = {(t.name, s): root and root / cache_name(source, t, s, tokenizer, max_seq_length) for t, s in wanted}
    fresh = {(t.name, s): source.examples(t, s) for t, s in wanted
             if paths[t.name, s] is None or overwrite or not paths[t.name, s].exists()}
    return {(t.name, s): load_features(t, s, tokenizer, max_seq_length, paths[t.name, s], fresh.get((t.name, s)),
                                       runtime, overwrite)
            for t, s in wanted}


def cache_root(cache_dir):
    """Where features are cached: in --cache_dir, else in the datasets cache (HF_DATASETS_CACHE),
    never next to the data, which may be shared or read-only. None (tokenize in memory) when that
    folder cannot be written, with one warning."""
    root = Path(cache_dir) if cache_dir else default_cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=root).close()
    except OSError as e:
        logger.warning("cannot write the feature cache in %s (%s): tokenizing in memory this time",
                       root, e.strerror or type(e).__name__)
        return None
    return root


def cache_name(source, task, split, tokenizer, max_seq_length):
    return f"cached_{split}_{tokenizer_key(tokenizer)}_{max_seq_length}_{task.name}_{source.cache_key(task, split)}"


def default_cache_root():
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "pabee-features"


def tokenizer_key(tokenizer):
    """Names what the tokenizer does, not where it lives: a checkpoint's copy hits the cache.
    Truncation and padding settings change as the tokenizer is called: they are left out."""
    behaviour = {k: v for k, v in json.loads(tokenizer.backend_tokenizer.to_str()).items()
                 if k not in ("truncation", "padding")}
    identity = json.dumps(behaviour, sort_keys=True) + str(sorted(tokenizer.special_tokens_map.items()))
    return f"{type(tokenizer).__name__}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


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

    logger.info("Tokenizing %s %s: %d examples", task.name, split, len(examples["text_a"]))
    pair = task.text_columns[1] is not None

    def encode(batch):
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True,
                         max_length=max_seq_length, return_token_type_ids=True)  # ALBERT's default omits them

    columns = ["text_a", "text_b"] + (["label"] if split == "test" else [])
    return datasets.Dataset.from_dict(examples).map(encode, batched=True, remove_columns=columns,
                                                    desc=f"Tokenizing {task.name} {split}")


def eval_loader(features, pad_id, batch_size):
    """Batches of similar length, longest first, to cut padding; returns the loader and
    `order`, the dataset index of each example in the order the loader yields them."""
    order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
    loader = DataLoader(features.remove_columns([c for c in ("index",) if c in features.column_names]),
                        batch_size=batch_size, sampler=order.tolist(), collate_fn=lambda f: collate(f, pad_id))
    return loader, torch.as_tensor(order)


def train_loader(features, pad_id, batch_size, runtime, seed):
    """DistributedSampler orders each epoch from seed + epoch, with one process as well: the
    order is reproducible, so a resumed run sees the batches it would have seen. On CUDA two
    worker processes collate into pinned memory, so that batches are ready before the GPU asks."""
    sampler = DistributedSampler(features, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
    cuda = runtime.device.type == "cuda"
    loader = DataLoader(features, batch_size=batch_size, sampler=sampler, collate_fn=partial(collate, pad_id=pad_id),
                        generator=torch.Generator(),  # keeps the global RNG (dropout) untouched
                        num_workers=2 if cuda else 0, pin_memory=cuda)
    return loader, sampler


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
