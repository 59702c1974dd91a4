"""The exit engine's stream (pabee/early_exit/engine.py, pabee/early_exit/flow.py): the same answers as one example at a
time for every backbone and exit criterion, in any input order, bucket set and batch size; calls
of declared shapes that stay full while the stream lasts; one small host read per call at most;
answers given back in input order before the input ends."""

import random

import numpy as np
import pytest
import torch

from conftest import KINDS, varied_batch
from test_later_methods import rules_at_quantiles
from test_modeling import agreement_threshold, configure, make
from pabee.base.errors import UsageError
from pabee.early_exit import flow
from pabee.early_exit.engine import Shapes, served, stream
from pabee.early_exit.exit_settings import parse_buckets
from pabee.early_exit.rules import ConfidenceRule, EntropyRule, FixedRule, PatienceRule

FIXED = ((1, 4, 8, 16, 64, 256), (8, 16, 24))  # rows, lengths: every call padded


def examples_of(ids, mask):
    return [{"input_ids": ids[j, :int(mask[j].sum())].tolist(), "attention_mask": [1] * int(mask[j].sum())}
            for j in range(len(ids))]


def run_stream(model, rule, examples, batch_size, buckets=(None, None)):
    """(answers, exit layers, launches) of the engine, chunks of batch_size."""
    shapes = Shapes.of(batch_size, max(len(e["input_ids"]) for e in examples), *buckets)
    chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    with torch.inference_mode():
        answered = list(stream(model, rule, chunks, shapes, pad_id=0))
    return (torch.cat([a.logits for a in answered]), torch.cat([a.exit_layers for a in answered]),
            [launch for a in answered for launch in a.launches])


def one_at_a_time(model, rule, examples):
    with torch.inference_mode():
        outs = [model(input_ids=torch.tensor([e["input_ids"]]), attention_mask=torch.tensor([e["attention_mask"]]),
                      exit_rule=rule) for e in examples]
    return torch.cat([o.logits for o in outs]).float(), torch.cat([o.exit_layers for o in outs])


def every_criterion(model, ids, mask):
    """One or more rules of every criterion, thresholds at quantiles of the model's own values."""
    later, out = rules_at_quantiles(model, ids, mask)
    probabilities = out.all_layer_logits.float().softmax(-1)
    entropy = -(probabilities * probabilities.log()).sum(-1).flatten().median()
    confidence = probabilities.max(-1).values.flatten().median()
    return [PatienceRule(0), PatienceRule(1), PatienceRule(2), EntropyRule(float(entropy)),
            ConfidenceRule(float(confidence)), FixedRule(2)] + later[::2]


# (batch size, buckets, input order): every batch size of the acceptance, exact and fixed shapes
CASES = [(1, (None, None), "given"), (7, FIXED, "shuffled"), (64, (None, None), "shuffled"), (256, FIXED, "reversed")]


@pytest.mark.parametrize("kind", KINDS)
def test_stream_answers_as_one_example_at_a_time_in_float64(kind):
    model = configure(kind, 3, None, "mean", exit_training="alternate_lte").double()
    ids, mask = varied_batch(48, seed=31)
    examples = examples_of(ids, mask)
    spread = set()
    for rule in every_criterion(model, ids, mask):
        expected_logits, expected_exits = one_at_a_time(model, rule, examples)
        for batch_size, buckets, order in CASES:
            positions = list(range(len(examples)))
            if order != "given":
                random.Random(batch_size).shuffle(positions) if order == "shuffled" else positions.reverse()
            logits, exits, launches = run_stream(model, rule, [examples[p] for p in positions], batch_size, buckets)
            assert exits.tolist() == expected_exits[positions].tolist(), (rule.name, batch_size)
            torch.testing.assert_close(logits.double(), expected_logits[positions].double(), rtol=1e-10, atol=1e-12)
            assert sum(launch.rows for launch in launches) == int(exits.sum())  # rows run = sum of exit layers
        spread.add(float(expected_exits.float().mean()))
    assert len(spread) >= 4, "the rules should exit at different layers, or the test proves little"


@pytest.mark.parametrize("kind", ["bert", "albert", "deberta-v2", "modernbert"])
def test_stream_answers_as_one_example_at_a_time_in_float32_and_for_regression(kind):
    ids, mask = varied_batch(40, seed=32)
    examples = examples_of(ids, mask)
    for num_labels in (3, 1):
        model = configure(kind, num_labels, None)
        threshold = agreement_threshold(model, ids, mask) if num_labels == 1 else 0.0
        for patience in (1, 2):
            rule = PatienceRule(patience, threshold)
            expected_logits, expected_exits = one_at_a_time(model, rule, examples)
            for batch_size, buckets, _ in CASES:
                logits, exits, _ = run_stream(model, rule, examples, batch_size, buckets)
                assert torch.equal(exits, expected_exits), (num_labels, patience, batch_size)
                torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


def spread_model(layers=6):
    """A BERT whose heads make examples exit at many layers under patience 1."""
    model = make("bert", num_labels=3, layers=layers)
    for head in (model.exit_head(i) for i in range(layers)):
        torch.nn.init.normal_(head.weight, std=3.0)
    return model


def test_calls_keep_declared_shapes_stay_full_and_read_once_at_most():
    model = spread_model()
    ids, mask = varied_batch(400, max_len=24, seed=33)
    examples = examples_of(ids, mask)
    rule = PatienceRule(1)
    reads = []
    finish_read = flow.finish_read
    flow.finish_read = lambda copy: reads.append(copy.shape) or finish_read(copy)
    try:
        _, exits, launches = run_stream(model, rule, examples, 16, ((1, 2, 4, 8, 16), (8, 16, 24)))
    finally:
        flow.finish_read = finish_read
    assert sum(launch.rows for launch in launches) == int(exits.sum())
    assert {(launch.padded, launch.length) for launch in launches} <= {(r, t) for r in (1, 2, 4, 8, 16) for t in (8, 16, 24)}
    assert len(reads) == sum(launch.read for launch in launches) and all(len(shape) == 1 for shape in reads)
    assert not any(launch.read for launch in launches if launch.layer == 6)  # the last layer answers every row
    partial = [launch for launch in launches if launch.rows < 16]
    assert len(partial) <= 6 * 3 * 2, "only the drain at the end runs calls below the batch size"
    occupancy = sum(launch.rows for launch in launches) / sum(launch.padded for launch in launches)
    assert occupancy > 0.9 and len(set(exits.tolist())) >= 4
    stalled = [launch for launch in launches if launch.stalled]
    assert all(launch.read for launch in stalled) and len(stalled) < len(reads) / 4  # most reads wait behind a call


def test_a_patience_that_cannot_exit_before_the_last_layer_costs_what_full_depth_costs():
    """Patience L-1 on L layers answers as full depth, and with full depth's calls: no head below
    the last layer (their answers could change nothing), no read; the one given batch the same."""
    model = spread_model(layers=4)
    ids, mask = varied_batch(40, max_len=16, seed=5)
    examples = examples_of(ids, mask)
    heads = []
    hook = model.classifiers[0].register_forward_hook(lambda *args: heads.append(1))
    full, full_exits, full_calls = run_stream(model, PatienceRule(0), examples, 8)
    for patience in (3, 4):
        answers, exits, calls = run_stream(model, PatienceRule(patience), examples, 8)
        assert torch.equal(answers, full) and torch.equal(exits, full_exits) and calls == full_calls
        with torch.inference_mode():
            given = model(input_ids=ids, attention_mask=mask, exit_rule=PatienceRule(patience))
        torch.testing.assert_close(given.logits.float(), full)
    hook.remove()
    assert not heads
    assert PatienceRule(2).heads_before_last(4) and not PatienceRule(3).heads_before_last(4)


def test_a_length_sorted_chunk_joins_an_open_length_bucket_close_above():
    """Longest first, as run_glue evaluates: an example joins a bucket already holding rows when that
    pads it by flow.JOIN (12%) at most, so a thinning chunk makes fewer, larger calls; one that
    would pad more opens its own bucket."""
    model = spread_model(layers=4)
    lengths = [30, 29, 28, 27, 27, 25, 24, 12]  # own CPU buckets: 30 30 30 27 27 27 24 12
    examples = [{"input_ids": [(7 * j + k) % 90 + 5 for k in range(n)], "attention_mask": [1] * n}
                for j, n in enumerate(lengths)]
    answers, exits, launches = run_stream(model, PatienceRule(0), examples, 16, ("auto", "auto"))
    assert sorted({(launch.layer, launch.length, launch.rows) for launch in launches}) == [
        (layer, length, rows) for layer in (1, 2, 3, 4) for length, rows in ((12, 1), (24, 1), (27, 1), (30, 5))]
    alone, _, _ = run_stream(model, PatienceRule(0), examples, 16)  # exact lengths: a bucket each
    torch.testing.assert_close(answers, alone, rtol=1e-4, atol=1e-4)


def test_a_shrinking_batch_against_refill_on_the_same_stream():
    """Batch by batch (each batch run to its end, as model(...) does) calls shrink as rows exit;
    the stream keeps them at the batch size."""
    model = spread_model()
    ids, mask = varied_batch(128, max_len=16, seed=34)
    _, _, refilled = run_stream(model, PatienceRule(1), examples_of(ids, mask), 16, ((16,), (16,)))
    real = [launch.rows for launch in refilled]
    assert sum(r == 16 for r in real) / len(real) > 0.75
    with torch.inference_mode():
        exits = torch.cat([model(input_ids=ids[i:i + 16], attention_mask=mask[i:i + 16], exit_rule=PatienceRule(1))
                           .exit_layers for i in range(0, 128, 16)])
    batch_calls = sum(int((exits[i:i + 16] >= layer).any()) for i in range(0, 128, 16) for layer in range(1, 7))
    assert len(real) < batch_calls


def test_answers_come_in_input_order_before_the_input_ends():
    model = spread_model()
    ids, mask = varied_batch(96, seed=35)
    examples = examples_of(ids, mask)
    pulled = []

    def chunks():
        for i in range(0, 96, 8):
            pulled.append(i)
            yield examples[i:i + 8]

    shapes = Shapes.of(8, 20)
    with torch.inference_mode():
        first_given_at = None
        given = 0
        for answered in stream(model, PatienceRule(1), chunks(), shapes, pad_id=0):
            first_given_at = first_given_at if first_given_at is not None else len(pulled)
            given += len(answered.exit_layers)
    assert given == 96 and first_given_at < len(pulled) == 12


def test_a_short_chunk_answers_everything_in_flight():
    """A pause in the input (predict.py yields a short chunk) gives back every answer so far."""
    model = spread_model()
    ids, mask = varied_batch(11, seed=36)
    examples = examples_of(ids, mask)
    with torch.inference_mode():
        answered = stream(model, PatienceRule(1), iter([examples[:8], examples[8:11]]), Shapes.of(8, 20), pad_id=0)
        counts = [len(a.exit_layers) for a in answered]
    assert sum(counts) == 11 and counts[-1] >= 3


def test_shapes_and_bucket_flags():
    shapes = Shapes.of(32, 128, fixed=True)
    assert shapes.rows == (1, 8, 16, 32) and shapes.lengths == (32, 64, 128)
    assert shapes.row_bucket(9) == 16 and shapes.length_bucket(33) == 64 and shapes.declared == 12
    exact = Shapes.of(32, 128, lengths=None)
    assert exact.rows is None and exact.row_bucket(9) == 9 and exact.length_bucket(33) == 33
    assert exact.declared == 32 * 128
    cpu = Shapes.of(32, 128)  # the CPU's default: rows exact, lengths padded by at most about 12%
    assert cpu.rows is None and all(t <= cpu.length_bucket(t) <= max(8, 1.13 * t) for t in range(1, 129))
    assert Shapes.of(100, 40, rows=(1, 64, 256), lengths=(16, 64)).rows == (1, 64, 100)
    assert parse_buckets("auto", "--x") == "auto" and parse_buckets("exact", "--x") is None
    assert parse_buckets("64, 8,8", "--x") == (8, 64)
    for bad in ("0,8", "a", "8,", "-1"):
        with pytest.raises(UsageError, match="--row_buckets"):
            parse_buckets(bad, "--row_buckets")
    assert np.all(np.diff(Shapes.of(256, 512, fixed=True).rows) > 0)


def open_feed(model, rule, examples, batch_size, seed):
    """(answers by position, exit layers by position, the order they left, launches) of `served`,
    fed the examples in drawn bursts (some calls bring none while rows are in flight)."""
    draw, rest = random.Random(seed), list(examples)

    def arrivals(busy):
        if not rest:
            return None
        n = draw.choice([0, 1, 1, 2, 3, batch_size + 1]) if busy else draw.randint(1, 3)
        came, rest[:] = rest[:n], rest[n:]
        return came

    shapes = Shapes.of(batch_size, max(len(e["input_ids"]) for e in examples))
    logits, exits, order, launches = {}, {}, [], []
    with torch.inference_mode():
        for out in served(model, rule, shapes, 0, arrivals):
            for k, position in enumerate(out.ids.tolist()):
                logits[position], exits[position] = out.logits[k], int(out.exit_layers[k])
                order.append(position)
            launches += out.launches
    return logits, exits, order, launches


@pytest.mark.parametrize("kind", ["bert", "deberta-v2", "modernbert"])
def test_an_open_feed_answers_each_example_as_alone_and_lets_it_leave_as_it_exits(kind):
    """Examples join while rows are in flight and leave in exit order (an early one does not wait for
    one before it); every answer and exit layer is the example's own, alone; no row runs a layer
    past its exit."""
    model = configure(kind, 3, None, "mean").double()
    ids, mask = varied_batch(40, seed=5)
    examples = examples_of(ids, mask)
    for rule in (PatienceRule(1), PatienceRule(2), EntropyRule(0.6)):
        expected_logits, expected_exits = one_at_a_time(model, rule, examples)
        for batch_size in (1, 5, 16):
            logits, exits, order, launches = open_feed(model, rule, examples, batch_size, seed=batch_size)
            assert sorted(order) == list(range(len(examples)))
            assert [exits[p] for p in range(len(examples))] == expected_exits.tolist(), (rule.name, batch_size)
            torch.testing.assert_close(torch.stack([logits[p] for p in range(len(examples))]).double(),
                                       expected_logits.double(), rtol=1e-10, atol=1e-12)
            assert sum(launch.rows for launch in launches) == sum(exits.values())
            if batch_size > 1 and len(set(exits.values())) > 1:
                assert order != sorted(order), "no example left before one that came earlier"
