import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Feature caches of the tests (and of the processes they start) stay out of the user's cache.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="pabee-tests-datasets-")
# No test reaches the network: hub names are answered from the cache or refused at once.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

from transformers import AlbertConfig, BertConfig  # noqa: E402

from backbones import BACKBONES  # noqa: E402

VOCAB = 99
KINDS = list(BACKBONES)  # every backbone is tested


def tiny_bert_config(num_labels=2, layers=4, **overrides):
    settings = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels,
    )
    settings.update(overrides)
    return BertConfig(**settings)


def tiny_albert_config(num_labels=2, layers=4, **overrides):
    settings = dict(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels,
    )
    settings.update(overrides)
    return AlbertConfig(**settings)


def varied_batch(n, max_len=20, seed=0):
    """n examples of lengths 3..max_len, right-padded with 0, as input_ids and attention_mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_len + 1, (n,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(1, VOCAB, (n, max_len), generator=g)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Tiny BERT and ALBERT folders (tokenizer included) and synthetic GLUE-format tasks."""
    from glue_fixtures import tiny_albert_folder, tiny_bert_folder, write_task

    root = tmp_path_factory.mktemp("world")
    tiny_bert_folder(root / "bert")
    tiny_albert_folder(root / "albert")
    for folder in ("SST-2", "STS-B", "MNLI", "RTE"):
        write_task(root / "glue", folder, n_train=400)
    return root
