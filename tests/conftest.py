import os
import sys
import tempfile
from pathlib import Path

# The suite runs on the CPU, where its bitwise claims (resume, batch against one example) are made,
# unless PABEE_TEST_DEVICE=cuda asks for the GPU: hidden before torch starts, for every process the
# tests start too.
if os.environ.get("PABEE_TEST_DEVICE", "cpu") != "cuda":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Feature caches of the tests (and of the processes they start) stay out of the user's cache.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="pabee-tests-datasets-")
# No test reaches the network: hub names are answered from the cache or refused at once.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

from transformers import (  # noqa: E402
    AlbertConfig,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    RobertaConfig,
)

from pabee.modeling.backbones import BACKBONES  # noqa: E402

VOCAB = 99
KINDS = list(BACKBONES)  # every backbone is tested
CLASSIC = ["bert", "albert"]  # the paper's backbones: original checkpoint names, the classic scripts
# transformers' own classes for each backbone: the plain model and the sequence classifier
TRANSFORMERS_CLASSES = {
    "bert": ("BertModel", "BertForSequenceClassification"),
    "albert": ("AlbertModel", "AlbertForSequenceClassification"),
    "roberta": ("RobertaModel", "RobertaForSequenceClassification"),
    "distilbert": ("DistilBertModel", "DistilBertForSequenceClassification"),
    "electra": ("ElectraModel", "ElectraForSequenceClassification"),
    "deberta-v2": ("DebertaV2Model", "DebertaV2ForSequenceClassification"),
    "modernbert": ("ModernBertModel", "ModernBertForSequenceClassification"),
}


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


def tiny_roberta_config(num_labels=2, layers=4, **overrides):
    return tiny(RobertaConfig, num_labels, layers, **{"pad_token_id": 0, **overrides})


def tiny_electra_config(num_labels=2, layers=4, **overrides):
    return tiny(ElectraConfig, num_labels, layers, embedding_size=16, **overrides)


def tiny_distilbert_config(num_labels=2, layers=4, **overrides):
    settings = dict(vocab_size=VOCAB, dim=32, n_layers=layers, n_heads=2, hidden_dim=37, max_position_embeddings=64,
                    num_labels=num_labels, seq_classif_dropout=0.1)
    settings.update(overrides)
    return DistilBertConfig(**settings)


def tiny_deberta_v2_config(num_labels=2, layers=4, **overrides):
    """DeBERTa-v3-style: relative attention with buckets, c2p|p2c, layer-norm on relative
    embeddings, the layer-0 convolution, no token types."""
    return tiny(DebertaV2Config, num_labels, layers, relative_attention=True, position_buckets=8,
                max_relative_positions=16, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                conv_kernel_size=3, position_biased_input=False, type_vocab_size=0, pooler_hidden_size=32,
                pooler_hidden_act="gelu", **overrides)


def tiny_modernbert_config(num_labels=2, layers=4, **overrides):
    """Global attention every second layer and a sliding window shorter than the test batches,
    so both masks and both rotary tables are exercised."""
    settings = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                    intermediate_size=37, max_position_embeddings=64, num_labels=num_labels, pad_token_id=0,
                    bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, global_attn_every_n_layers=2,
                    local_attention=8, classifier_pooling="mean")
    settings.update(overrides)
    return ModernBertConfig(**settings)


def tiny(config_class, num_labels, layers, **overrides):
    settings = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                    intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)
    settings.update(overrides)
    return config_class(**settings)


TINY_CONFIGS = {"bert": tiny_bert_config, "albert": tiny_albert_config, "roberta": tiny_roberta_config,
                "distilbert": tiny_distilbert_config, "electra": tiny_electra_config,
                "deberta-v2": tiny_deberta_v2_config, "modernbert": tiny_modernbert_config}


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
    """A tiny plain model folder (tokenizer included) per backbone and synthetic GLUE-format tasks."""
    from glue_fixtures import tiny_folder, write_task

    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)  # the same random backbones whichever test asks first
    for kind in KINDS:
        tiny_folder(kind, root / kind)
    for folder in ("SST-2", "STS-B", "MNLI", "RTE"):
        write_task(root / "glue", folder, n_train=400)
    return root
