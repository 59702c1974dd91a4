"""The benchmark's own pieces, on a tiny model: its classic baseline and its sweep must give our
answers, or its ratios compare different work. (Timings are never asserted.)"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_speed  # noqa: E402
import engine_figures  # noqa: E402
import host_costs  # noqa: E402
from conftest import tiny_bert_config  # noqa: E402
from modeling_pabee_bert import BertForSequenceClassificationWithPabee  # noqa: E402
from pabee.early_exit.engine import Shapes  # noqa: E402
from pabee.early_exit.rules import PatienceRule  # noqa: E402


def test_classic_baseline_and_sweep_agree_with_batched_early_exit():
    texts = bench_speed.sentences()[0][:40]
    tokenizer, _ = bench_speed.tokenizer_for(texts)
    model = BertForSequenceClassificationWithPabee(
        tiny_bert_config(num_labels=3, layers=6, vocab_size=len(tokenizer), max_position_embeddings=160)).eval()
    device = torch.device("cpu")
    batches = bench_speed.encode(tokenizer, texts, 16, device)
    bench_speed.spread_exits(model, batches, patience=2)
    ours, exits = bench_speed.infer(model, batches, PatienceRule(2))
    assert len(set(exits.tolist())) >= 3, "heads should spread exits over several layers"
    padded = bench_speed.encode(tokenizer, texts, 1, device, pad_to=bench_speed.CLASSIC_LENGTH)
    theirs, their_exits = bench_speed.classic(model, padded, 2)
    assert torch.equal(ours, theirs) and torch.equal(exits, their_exits)
    swept = bench_speed.sweep(model, batches, [PatienceRule(p) for p in (1, 2, 3)])
    for (predictions, layers), p in zip(swept, (1, 2, 3), strict=True):
        real = bench_speed.infer(model, batches, PatienceRule(p))
        assert torch.equal(predictions, real[0]) and torch.equal(layers, real[1])


def test_sampled_batches_are_evaluation_batches_spread_over_lengths():
    texts = bench_speed.sentences()[0]
    tokenizer, _ = bench_speed.tokenizer_for(texts)
    ordered = bench_speed.in_length_order(tokenizer, texts)
    lengths = [len(tokenizer(t)["input_ids"]) for t in ordered]
    assert lengths == sorted(lengths, reverse=True)
    picked = bench_speed.sample_of_batches(ordered, 32, 3)
    full = len(ordered) // 32
    starts = [0, (full - 1) // 2 * 32, (full - 1) * 32]  # the longest, a middle and the last full batch
    assert picked == [t for start in starts for t in ordered[start:start + 32]]
    batches = bench_speed.encode(tokenizer, picked, 32, torch.device("cpu"))
    assert [b["input_ids"].shape[1] for b in batches] == [lengths[start] for start in starts]


def test_host_costs_count_the_waits_of_early_exit_and_none_more_at_full_depth():
    texts = bench_speed.sentences()[0][:48]
    tokenizer, _ = bench_speed.tokenizer_for(texts)
    model = BertForSequenceClassificationWithPabee(
        tiny_bert_config(num_labels=3, layers=6, vocab_size=len(tokenizer), max_position_embeddings=160)).eval()
    batches = bench_speed.encode(tokenizer, texts, 16, torch.device("cpu"))
    bench_speed.spread_exits(model, batches, patience=2)
    operators, full_depth_waits = host_costs.counted(model, batches, PatienceRule(0))
    _, early_waits = host_costs.counted(model, batches, PatienceRule(2))
    assert full_depth_waits == len(batches)  # one read of the answers per batch, none per layer
    reads = 0  # and one per layer call where a row may exit, nothing else
    for b in batches:
        examples = engine_figures.unpadded(b)
        shapes = Shapes.of(len(examples), b["input_ids"].shape[1])
        reads += sum(x.read for x in engine_figures.launch_log(model, examples, shapes, 0, PatienceRule(2))[1])
    assert len(batches) < early_waits == len(batches) + reads
    costs = host_costs.host_costs(model, batches[:1], batches, torch.device("cpu"))
    assert costs["operators_per_layer_bs32"] == operators / len(batches) / 6
