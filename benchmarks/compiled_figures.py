"""The exit engine's compiled step on this machine: whether it gives eager's answers, whether a set
run again after warm-up recompiles, operators dispatched per layer call, and its speed against
eager where it runs.

- Every exit criterion of pabee.early_exit.rules.RULES at its own example setting (pabee.early_exit.rules.example_rule,
  patience 2 where it counts), on narrow 4-layer BERT and ALBERT models (2 layers in a smoke run), 32 SST-2 dev sentences in
  one shape, with the aot_eager backend (the graph inductor compiles, captured whole, without
  generating code).
- Patience 2 on a narrow 4-layer BERT over the SST-2 dev sentences (calls of 32 rows, lengths
  32, 64 and the longest) with the real backend (inductor; CUDA graphs on CUDA): answers against
  eager, recompiles on a second pass (dynamo's error_on_recompile), and the time of a pass,
  compiled against eager, after the warm-up. (Each graph compiles in seconds here: 4 layers keep
  the benchmark short; a graph per layer is what a deeper model adds.)
Operators per call: aten operators reaching the dispatcher from each step call (torch's profiler:
eager's top-level operators; compiled, those the compiled graph calls, the kernels it generated
itself not counted).
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch._dynamo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import AlbertConfig  # noqa: E402

from modeling_pabee_albert import AlbertForSequenceClassificationWithPabee  # noqa: E402
from pabee.early_exit.compiled_step import compiled_step  # noqa: E402
from pabee.early_exit.engine import Shapes, layer_step, stream  # noqa: E402
from pabee.early_exit.rules import RULES, example_rule, make_rule  # noqa: E402
from engine_figures import as_examples, narrow_model  # noqa: E402
from workload import PATIENCE, encode, spread_exits  # noqa: E402

def narrow_albert(vocab_size, layers):
    torch.manual_seed(0)
    config = AlbertConfig(vocab_size=vocab_size, embedding_size=32, hidden_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, intermediate_size=128, num_labels=3, exit_training="alternate_lte")
    return AlbertForSequenceClassificationWithPabee(config).eval()


def answers(model, rule, examples, shapes, step):
    chunks = [examples[i:i + shapes.batch_size] for i in range(0, len(examples), shapes.batch_size)]
    with torch.inference_mode():
        out = list(stream(model, rule, chunks, shapes, 0, step))
    return torch.cat([a.logits for a in out]), torch.cat([a.exit_layers for a in out]), [x for a in out for x in a.launches]


def same(a, b):
    return torch.equal(a[1], b[1]) and bool(torch.allclose(a[0], b[0], rtol=1e-4, atol=1e-4))


def every_criterion_matches(tokenizer, texts, layers):
    """Whether aot_eager's capture answers as eager for every criterion, on BERT and ALBERT of `layers` layers."""
    examples = as_examples(tokenizer, texts[:32])
    bert = narrow_model(len(tokenizer), layers=layers)
    bert.config.exit_training = "alternate_lte"
    bert.lte = torch.nn.Linear(64, 1)  # the learning-to-exit head, as an alternate_lte model has
    results = []
    for model in (bert, narrow_albert(len(tokenizer), layers)):
        spread_exits_of(model, tokenizer, texts)
        longest = max(len(e["input_ids"]) for e in examples)
        shapes = Shapes.of(16, longest, rows=(16,), lengths=(longest,))
        step = compiled_step(model.num_layers, shapes, "cpu", "aot_eager")
        for criterion in RULES:
            rule = example_rule(criterion, PATIENCE)
            results.append(same(answers(model, rule, examples, shapes, step), answers(model, rule, examples, shapes,
                                                                                       layer_step)))
    return all(results), len(results)


def spread_exits_of(model, tokenizer, texts):
    if hasattr(model, "bert"):
        spread_exits(model, encode(tokenizer, texts[:256], 64, torch.device("cpu")), PATIENCE)


def ops_per_call(model, rule, examples, shapes, step):
    """aten operators per step call that reach the dispatcher (the step marked with record_function)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    def marked(*args):
        with record_function("engine_step"):
            return step(*args)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        calls = len(answers(model, rule, examples, shapes, marked)[2])
    steps = [e for e in prof.events() if e.name == "engine_step"]
    return sum(count_dispatched(e) for e in steps) / calls


def count_dispatched(event):
    """Operators an event issues: its aten children (not theirs), through compiled regions' graphs."""
    total = 0
    for child in event.cpu_children:
        total += 1 if child.name.startswith("aten::") else count_dispatched(child)
    return total


def compiled_figures(tokenizer, dev_texts, rounds=3, backend=None, criterion_layers=4):
    """The figures above; `backend` None is the real one (inductor), "aot_eager" a capture without
    generated code, and fewer `criterion_layers` fewer graphs (bench_speed --smoke)."""
    matches, checked = every_criterion_matches(tokenizer, dev_texts, criterion_layers)
    model = narrow_model(len(tokenizer), layers=4)
    spread_exits_of(model, tokenizer, dev_texts)
    examples = as_examples(tokenizer, dev_texts)
    device = next(model.parameters()).device.type
    shapes = Shapes.of(32, max(len(e["input_ids"]) for e in examples), rows=(32,), lengths=(32, 64))
    rule = make_rule("patience", PATIENCE, 0.0)
    torch._dynamo.reset()
    step = compiled_step(model.num_layers, shapes, device, backend)
    start = time.perf_counter()
    first = answers(model, rule, examples, shapes, step)
    warm_up = time.perf_counter() - start
    eager = answers(model, rule, examples, shapes, layer_step)
    recompiles = 0
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            again = answers(model, rule, examples, shapes, step)
    except Exception:  # dynamo's RecompileError, raised through the compiled call
        recompiles, again = 1, first
    seconds = {"eager": [], "compiled": []}
    for _ in range(rounds):
        for name, fn in (("eager", layer_step), ("compiled", step)):
            start = time.perf_counter()
            answers(model, rule, examples, shapes, fn)
            seconds[name].append(time.perf_counter() - start)
    return {"compiled_matches_eager": matches and same(first, eager) and same(again, eager),
            "compiled_matches_eager_checked": f"{checked} criterion x model pairs (aot_eager), patience 2 on "
                                              f"{len(examples)} dev sentences ({backend or 'inductor'})",
            "recompiles_after_warmup": recompiles, "compile_warm_up_s": warm_up,
            "ops_per_layer_call_eager": ops_per_call(model, rule, examples[:64], shapes, layer_step),
            "ops_per_layer_call_compiled": ops_per_call(model, rule, examples[:64], shapes, step),
            "compiled_over_eager_cpu_time": statistics.median(seconds["compiled"]) / statistics.median(seconds["eager"])}
