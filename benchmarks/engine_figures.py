"""The exit engine's figures that a CPU can prove for a GPU, from its launch log: occupancy of the
layer calls (real rows over padded rows), rows run against the sum of exit layers, distinct call
shapes against the declared ones, and host reads per layer call.

They are counts: they depend on the exits and the input lengths, not on the model's width. So they
are measured with a narrow 12-layer BERT (hidden 64) whose heads spread exits as the speed
benchmark spreads them (workload.spread_exits), on a stream of real SST-2 *train* sentences (24
full batches of 256, in run_glue's evaluation order, longest first), under the GPU's declared
buckets (engine.GPU_ROWS, engine.GPU_LENGTHS).
"""

import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import BertConfig  # noqa: E402

from modeling_pabee_bert import BertForSequenceClassificationWithPabee  # noqa: E402
from pabee.data import glue  # noqa: E402
from pabee.early_exit.compiled_step import compiled_step  # noqa: E402
from pabee.early_exit.engine import GPU_LENGTHS, GPU_ROWS, Shapes, layer_step, stream  # noqa: E402
from pabee.early_exit.rules import PatienceRule  # noqa: E402
from gpu_costs import default_table, launch_counts, prediction  # noqa: E402
from workload import CLASSIC_LENGTH, PATIENCE, SST2_DEV, encode, in_length_order, spread_exits  # noqa: E402

SST2_TRAIN = SST2_DEV.parent / "train.tsv"
FULL_BATCHES = 24
BS1_EXAMPLES = 512  # batch 1 is one row per call: fewer examples give as many calls as the other sizes


def train_sentences(count, path=SST2_TRAIN):
    """`count` SST-2 train sentences drawn at random (fixed seed), or None when the file is absent."""
    if not Path(path).is_file():
        return None
    texts = glue.read_split(glue.TASKS["sst-2"], path, "train")["text_a"]
    return random.Random(0).sample(texts, min(count, len(texts)))


def narrow_model(vocab_size, layers=12):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=128, num_labels=3)
    return BertForSequenceClassificationWithPabee(config).eval()


def as_examples(tokenizer, texts):
    encoded = tokenizer(texts, truncation=True, max_length=CLASSIC_LENGTH)
    return [{"input_ids": ids, "attention_mask": mask} for ids, mask in zip(encoded["input_ids"],
                                                                             encoded["attention_mask"], strict=True)]


def unpadded(batch):
    """The examples of a padded batch, as the engine takes them."""
    lengths = batch["attention_mask"].sum(1).tolist()
    return [{"input_ids": ids[:n].tolist(), "attention_mask": [1] * n} for ids, n in zip(batch["input_ids"], lengths, strict=True)]


def infer(model, batches, rule):
    """(predictions, exit layers) of the exit engine's stream over `batches`, each a stream of its
    own (a chunk of the batch size, then run to its end), as --engine_step auto runs it: on CUDA in
    the GPU's buckets with the compiled step, on the CPU eager in the CPU's."""
    cuda = next(model.parameters()).device.type == "cuda"
    predictions, exits = [], []
    with torch.inference_mode():
        for b in batches:
            examples = unpadded(b)
            shapes = Shapes.of(len(examples), b["input_ids"].shape[1], fixed=cuda)
            step = compiled_step(model.num_layers, shapes, "cuda") if cuda else layer_step
            for answered in stream(model, rule, [examples], shapes, 0, step):
                predictions.append(answered.logits.argmax(-1))
                exits.append(answered.exit_layers)
    return torch.cat(predictions), torch.cat(exits)


def launch_log(model, examples, shapes, pad_id, rule, step=layer_step):
    """(exit layers, launches) of the engine over `examples`, chunks of the batch size."""
    size = shapes.batch_size
    chunks = (examples[i:i + size] for i in range(0, len(examples), size))
    exits, launches = [], []
    with torch.inference_mode():
        for answered in stream(model, rule, chunks, shapes, pad_id, step):
            exits.append(answered.exit_layers)
            launches += answered.launches
    return torch.cat(exits), launches


def scheduling_us(model, examples, shapes, pad_id, rule):
    """The engine's host time per call apart from the step (what a GPU cannot hide), microseconds."""
    inside = []

    def timed(*args):
        start = time.perf_counter()
        out = layer_step(*args)
        inside.append(time.perf_counter() - start)
        return out

    start = time.perf_counter()
    _, launches = launch_log(model, examples, shapes, pad_id, rule, timed)
    return 1e6 * (time.perf_counter() - start - sum(inside)) / len(launches)


def figures_of(exits, launches):
    real, padded = sum(x.rows for x in launches), sum(x.padded for x in launches)
    return {"occupancy": real / padded, "rows_over_exit_layer_sum": real / int(exits.sum()),
            "distinct_shapes": len({(x.padded, x.length) for x in launches}),
            "host_reads_per_layer_call": sum(x.read for x in launches) / len(launches),
            "stalled_reads_per_layer_call": sum(x.stalled for x in launches) / len(launches),
            "layer_calls": len(launches), "mean_exit_layer": float(exits.float().mean())}


def engine_figures(tokenizer, sizes=(1, 64, 256), count=None):
    """{key: value} for each batch size in `sizes`: occupancy_bs64, ..., the overall
    rows_over_exit_layer_sum, distinct_shapes, declared_shapes and host_reads_per_layer_call
    (the largest over the batch sizes), and the GPU speed-up predicted from the launch logs
    (gpu_costs.DEFAULT's table); `engine_runs` holds what gpu_table.py prices a measured table with."""
    texts = train_sentences(count or max(sizes) * FULL_BATCHES)
    source = "SST-2 train"
    if texts is None:
        return {"engine_inputs": f"none: {SST2_TRAIN} absent"}
    model = narrow_model(len(tokenizer))
    ordered = in_length_order(tokenizer, texts)
    spread_exits(model, encode(tokenizer, texts[:2048], 64, torch.device("cpu")), PATIENCE)
    examples = as_examples(tokenizer, ordered)
    results = {"engine_inputs": f"{len(texts)} {source} sentences, longest first; narrow 12-layer BERT"}
    totals = {"rows_over_exit_layer_sum": [], "distinct_shapes": [], "declared_shapes": [],
              "host_reads_per_layer_call": []}
    runs, pad_id = {}, tokenizer.pad_token_id
    for size in sizes:
        shapes = Shapes.of(size, CLASSIC_LENGTH, GPU_ROWS, GPU_LENGTHS)
        stream_of = examples[:BS1_EXAMPLES] if size == 1 else examples
        exits, launches = launch_log(model, stream_of, shapes, pad_id, PatienceRule(PATIENCE))
        full = launch_log(model, stream_of, shapes, pad_id, PatienceRule(0))[1]
        runs[f"bs{size}"] = {"early": launch_counts(launches), "full": launch_counts(full),
                             "ideal": model.config.num_hidden_layers / float(exits.float().mean())}
        figures = figures_of(exits, launches)
        results.update({f"{k}_bs{size}": v for k, v in figures.items()})
        for key in totals:
            totals[key].append(shapes.declared if key == "declared_shapes" else figures[key])
    results.update({key: max(values) for key, values in totals.items()})
    results["exit_histogram_stream"] = torch.bincount(exits, minlength=13)[1:].tolist()
    results["engine_scheduling_us"] = scheduling_us(model, examples[:1024], Shapes.of(64, CLASSIC_LENGTH, GPU_ROWS,
                                                                                      GPU_LENGTHS), pad_id,
                                                    PatienceRule(PATIENCE))
    table = default_table(GPU_ROWS, GPU_LENGTHS, results["engine_scheduling_us"])
    results.update(prediction(table, runs), engine_runs=runs)
    return results


def main(argv=None):
    import argparse
    import json

    from workload import sentences, tokenizer_for

    p = argparse.ArgumentParser(description="The exit engine's launch-log figures and the GPU prediction alone.")
    p.add_argument("--json", required=True)
    p.add_argument("--examples", type=int, default=None, help="Sentences in the stream (default: 24 batches of 256).")
    args = p.parse_args(argv)
    tokenizer = tokenizer_for(sentences()[0])[0]
    results = engine_figures(tokenizer, count=args.examples)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "engine_runs"}, indent=2))


if __name__ == "__main__":
    main()
