"""Speed of PABEE inference and training, as ratios measured side by side in one run.

    python benchmarks/bench_speed.py [--quick | --smoke] [--json PATH]

A BERT-base-shaped model (12 layers, hidden 768, random weights) reads real-length inputs: the
SST-2 dev sentences from ../shared/glue_data when present, else synthetic reviews. They are put in
length order and cut into batches of 32 as run_glue evaluates; a sample of these batches, spread
from the longest to the shortest, is measured (8, or 2 with --quick). Its heads are set so that
exits spread over many layers (see `spread_exits`). Every ratio compares runs that take turns
batch by batch, each batch's time the median of its repetitions, on the same examples and weights:

- realized_over_ideal_bs{1,32}: measured speed-up of patience inference over full depth,
  divided by the ideal L / mean exit layer;
- throughput_vs_classic: our batched patience inference against the classic algorithm (batch 1,
  every input padded to 128, one layer at a time, the batch exits together), same predictions;
- sweep_cost_ratio: six patience values from one pass against one full-depth evaluation;
- train_step_ratio, train_memory_ratio: a PABEE training step against transformers'
  BertForSequenceClassification on the same batch of random examples (memory: CUDA peak, or on
  the CPU the parameters, gradients and tensors saved for backward).

--smoke runs every part on a narrow model (hidden 64) and a few examples in seconds, and writes
every key: the suite runs it so that the benchmark cannot break unseen. Its ratios mean nothing.
"""

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from transformers import BertForSequenceClassification  # noqa: E402

from pabee.early_exit.rules import PatienceRule  # noqa: E402
from compiled_figures import compiled_figures  # noqa: E402
from host_costs import host_costs  # noqa: E402
from engine_figures import engine_figures, infer, narrow_model  # noqa: E402
from pabee.early_exit.sweep import exit_layers_from_logits, logits_at_exit  # noqa: E402
from workload import (  # noqa: E402
    CLASSIC_LENGTH,
    PATIENCE,
    SST2_DEV,
    base_shaped_model,
    encode,
    in_length_order,
    sample_of_batches,
    sentences,
    spread_exits,
    tokenizer_for,
    training_batch,
)

SWEEP = [1, 2, 3, 4, 5, 6]


def sweep(model, batches, rules):
    with torch.inference_mode():
        all_logits = torch.cat([model(**b, output_all_layer_logits=True).all_layer_logits for b in batches])
        return [(logits_at_exit(all_logits, e).argmax(-1), e) for e in
                (exit_layers_from_logits(all_logits, r) for r in rules)]


def classic(model, batches, patience):
    """The original algorithm at batch size 1: one layer at a time, the host checks after each
    layer whether the whole batch agreed with the previous layer, and stops when the counter
    reaches the patience."""
    predictions, exits = [], []
    with torch.inference_mode():
        for b in batches:
            hidden = model.embed(b["input_ids"], b["attention_mask"], None, None, None)
            inputs = model.layer_inputs(hidden, b["attention_mask"], None)
            counter, previous = 0, None
            for i in range(model.config.num_hidden_layers):
                hidden = model.run_layer(i, hidden, inputs)
                logits = model.classify(i, hidden)
                if previous is not None and torch.all(logits.argmax(1).eq(previous.argmax(1))):
                    counter += 1
                else:
                    counter = 0
                previous = logits
                if counter == patience:
                    break
            predictions.append(previous.argmax(1).cpu())
            exits.append(torch.tensor([i + 1]))
    return torch.cat(predictions), torch.cat(exits)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired(runs, units, reps, device, shuffled=False):
    """Each named run's seconds on each unit (the median of `reps` repetitions) and its answers
    (from the last repetition). The runs take turns unit by unit (order reversed every other
    turn), so that the shared machine's drift hits them alike; `shuffled`: in an order drawn anew
    each turn (seeded), so that no run always follows the same one (a torch run's threads keep
    spinning for a while after it, and slow whatever comes next)."""
    seconds = {name: [[] for _ in units] for name in runs}
    answers = {name: [None] * len(units) for name in runs}
    draw = random.Random(0)
    for rep in range(reps):
        for j, unit in enumerate(units):
            turns = list(runs.items())
            turns = draw.sample(turns, len(turns)) if shuffled else turns[:: -1 if (rep + j) % 2 else 1]
            for name, fn in turns:
                synchronize(device)
                start = time.perf_counter()
                answers[name][j] = fn(unit)
                synchronize(device)
                seconds[name][j].append(time.perf_counter() - start)
    return {name: [statistics.median(t) for t in per_unit] for name, per_unit in seconds.items()}, answers


def total_ratio(seconds, slow, fast):
    return sum(seconds[slow]) / sum(seconds[fast])


def train_step_costs(pabee, batch, reps, device):
    """(PABEE time / reference time, PABEE bytes, reference bytes) of forward + backward + AdamW
    step on the same batch; the reference shares the backbone and uses the last head. The time
    ratio is the median over `reps` pairs of steps taken one after the other (training steps
    vary by several percent on a shared machine; pairs cancel the drift)."""
    reference = BertForSequenceClassification(pabee.config).to(device)
    reference.load_state_dict({k: v for k, v in pabee.state_dict().items() if not k.startswith("classifiers.")})
    pabee.train()
    reference.train()
    steps = {}
    for name, model in (("pabee", pabee), ("reference", reference)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(_unit=None, model=model, optimizer=optimizer):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # warm-up, and optimizer state allocated before memory is compared
        steps[name] = step
    seconds, _ = paired(steps, [batch] * reps, 1, device)
    ratio = statistics.median(p / r for p, r in zip(seconds["pabee"], seconds["reference"], strict=True))
    memory = {name: step_memory(steps[name], model, device) for name, model in (("pabee", pabee), ("reference", reference))}
    pabee.eval()
    return ratio, memory["pabee"], memory["reference"]


def step_memory(step, model, device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated()
    saved = {}

    def pack(tensor):
        saved[(tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 2 * weights + sum(saved.values())  # parameters, their gradients, saved activations


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Fewer examples and repetitions: under 2 minutes on 2 CPU cores.")
    p.add_argument("--smoke", action="store_true",
                   help="Every part on a narrow model and a few examples, in seconds: checks that it runs, no figures.")
    p.add_argument("--json", default=None, help="Also write the ratios here as JSON.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sst2_dev", default=str(SST2_DEV), help="SST-2's dev.tsv, the inputs' lengths (default: ../shared's).")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    n_bs1, n_batches, train_batch, reps, train_reps = (4, 2, 4, 1, 1) if args.smoke else (32, 2, 8, 3, 7) \
        if args.quick else (120, 8, 16, 5, 15)
    texts, source = sentences(args.sst2_dev)
    tokenizer, tokenization = tokenizer_for(texts)
    model = narrow_model(len(tokenizer)).to(device) if args.smoke else base_shaped_model(len(tokenizer), device)
    picked = sample_of_batches(in_length_order(tokenizer, texts), 32, n_batches)
    bs32 = encode(tokenizer, picked, 32, device)  # bs32[j] is the j-th sampled evaluation batch
    bs1 = encode(tokenizer, picked[::len(picked) // n_bs1][:n_bs1], 1, device)
    spread_exits(model, bs32, PATIENCE)
    results = {}
    for size, batches in ((1, bs1), (32, bs32), (64, encode(tokenizer, picked, 64, device)),
                          (256, encode(tokenizer, picked, 256, device))):
        results.update(early_exit_speed(model, batches, f"bs{size}", reps, device))
    results.update(host_costs(model, bs1, bs32, device))
    results.update(against_classic(model, bs32, encode(tokenizer, picked, 1, device, pad_to=CLASSIC_LENGTH), reps,
                                   device))
    results.update(sweep_cost(model, bs32, reps, device))
    results.update(engine_figures(tokenizer, count=256 if args.smoke else None))
    results.update(compiled_figures(tokenizer, texts[:64], 1, "aot_eager", 2) if args.smoke else
                   compiled_figures(tokenizer, texts))
    batch = training_batch(tokenizer, texts, train_batch, device)
    results["train_step_ratio"], pabee_b, ref_b = train_step_costs(model, batch, train_reps, device)
    results["train_memory_ratio"] = pabee_b / ref_b
    results.update(device=str(device), inputs=f"{source}, {tokenization} tokens", examples_bs1=n_bs1,
                   model="narrow (smoke run: no figure to read)" if args.smoke else "BERT-base shape",
                   examples_bs32=len(picked), train_batch=train_batch, repetitions=reps, train_repetitions=train_reps,
                   patience=PATIENCE, torch_threads=torch.get_num_threads())
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def early_exit_speed(model, batches, name, reps, device):
    """Patience inference against full depth on the same batches, and the ideal L / mean exit;
    also the absolute cost: milliseconds per example and examples per second of each."""
    layers, examples = model.config.num_hidden_layers, sum(len(b["input_ids"]) for b in batches)
    full, early = PatienceRule(0), PatienceRule(PATIENCE)
    _, exits = infer(model, batches, early)  # also warms up every code path timed below
    runs = {"full": lambda b: infer(model, [b], full), "pabee": lambda b: infer(model, [b], early)}
    t, _ = paired(runs, batches, reps, device)
    speed_up, ideal = total_ratio(t, "full", "pabee"), layers / exits.float().mean().item()
    return {f"speed_up_{name}": speed_up, f"ideal_speed_up_{name}": ideal, f"realized_over_ideal_{name}": speed_up / ideal,
            f"exit_histogram_{name}": torch.bincount(exits, minlength=layers + 1)[1:].tolist(), f"examples_{name}": examples,
            **{f"ms_per_example_{run}_{name}": 1000 * sum(t[run]) / examples for run in runs},
            **{f"examples_per_s_{run}_{name}": examples / sum(t[run]) for run in runs}}


def against_classic(model, bs32, padded, reps, device):
    """The classic algorithm on the same examples: bs32[j] holds padded[32 j : 32 (j + 1)]."""
    early = PatienceRule(PATIENCE)
    t, answers = paired({"pabee": lambda j: infer(model, bs32[j:j + 1], early),
                         "classic": lambda j: classic(model, padded[32 * j:32 * (j + 1)], PATIENCE)},
                        list(range(len(bs32))), reps, device)
    ours, theirs = ([torch.cat(parts) for parts in zip(*answers[name], strict=True)] for name in ("pabee", "classic"))
    return {"throughput_vs_classic": total_ratio(t, "classic", "pabee"),
            "classic_same_predictions": all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))}


def sweep_cost(model, bs32, reps, device):
    """Six patience values from one full-depth pass against one plain full-depth evaluation."""
    rules = [PatienceRule(p) for p in SWEEP]
    few = [{k: v[:8] for k, v in bs32[0].items()}]  # answers checked on 8 examples (the tests check more)
    swept = sweep(model, few, rules)
    real = [infer(model, few, rule) for rule in rules]
    same = all(torch.equal(a[0].cpu(), b[0]) and torch.equal(a[1].cpu(), b[1]) for a, b in zip(swept, real, strict=True))
    t, _ = paired({"full": lambda b: infer(model, [b], PatienceRule(0)), "sweep": lambda b: sweep(model, [b], rules)},
                  bs32, reps, device)
    return {"sweep_same_answers": same, "sweep_cost_ratio": total_ratio(t, "sweep", "full")}


TARGETS = {"realized_over_ideal_bs1": ">= 0.95 (CUDA: >= 0.9)", "realized_over_ideal_bs32": ">= 0.95",
           "realized_over_ideal_bs64": "CUDA: >= 0.9", "realized_over_ideal_bs256": "CUDA: >= 0.9",
           "throughput_vs_classic": ">= 5 (CUDA: >= 30)", "sweep_cost_ratio": "<= 1.3 (CUDA: <= 1.2)",
           "train_step_ratio": "<= 1.05", "train_memory_ratio": "<= 1.05",
           "occupancy_bs64": ">= 0.9", "occupancy_bs256": ">= 0.9", "rows_over_exit_layer_sum": "= 1.0",
           "host_reads_per_layer_call": "<= 1", "recompiles_after_warmup": "= 0",
           "predicted_gpu_realized_over_ideal_bs1": ">= 0.9 (graph table)",
           "predicted_gpu_realized_over_ideal_bs64": ">= 0.9 (graph table)",
           "predicted_gpu_realized_over_ideal_bs256": ">= 0.9 (graph table)"}


def markdown(r):
    lines = [f"Device: {r['device']} ({r['torch_threads']} threads); inputs: {r['inputs']}; "
             f"{r['model']}, patience {r['patience']}; {r['examples_bs1']} examples at bs1, "
             f"{r['examples_bs32']} at bs32, "
             f"runs taking turns batch by batch, each batch's time the median of {r['repetitions']} repetitions "
             f"({r['train_repetitions']} for training steps).", "",
             "| ratio | measured | target |", "|---|---|---|"]
    lines += [f"| {k} | {r[k]:.3f} | {v} |" for k, v in TARGETS.items() if k in r]
    lines += ["", "| absolute | full depth | patience |", "|---|---|---|",
              f"| ms per example, batch 1 | {r['ms_per_example_full_bs1']:.2f} | {r['ms_per_example_pabee_bs1']:.2f} |"]
    lines += [f"| examples/s, batch {n} ({r[f'examples_bs{n}']} examples) | {r[f'examples_per_s_full_bs{n}']:.1f} | "
              f"{r[f'examples_per_s_pabee_bs{n}']:.1f} |" for n in (32, 64, 256)]
    lines += ["", f"Host: {r['host_waits_per_batch_bs1']:.1f} waits per batch at bs1, "
              f"{r['host_waits_per_batch_bs32']:.1f} at bs32 (patience inference); operators dispatched per layer at "
              f"full depth {r['operators_per_layer_bs1']:.1f} (bs1), {r['operators_per_layer_bs32']:.1f} (bs32)"
              + (f"; CUDA kernels per layer at bs1 {r['kernels_per_layer_bs1']:.1f}" if "kernels_per_layer_bs1" in r else "")]
    lines += ["", f"bs1: speed-up {r['speed_up_bs1']:.2f}x of ideal {r['ideal_speed_up_bs1']:.2f}x, exits per layer "
              f"{r['exit_histogram_bs1']}",
              f"bs32: speed-up {r['speed_up_bs32']:.2f}x of ideal {r['ideal_speed_up_bs32']:.2f}x, exits per layer "
              f"{r['exit_histogram_bs32']}",
              f"classic baseline gives the same predictions and exits: {r['classic_same_predictions']}; "
              f"sweep gives the same answers as real early exit: {r['sweep_same_answers']}"]
    if "compiled_matches_eager" in r:
        lines += [f"Compiled step: same answers as eager {r['compiled_matches_eager']} "
                  f"({r['compiled_matches_eager_checked']}); operators per layer call {r['ops_per_layer_call_eager']:.1f} "
                  f"eager, {r['ops_per_layer_call_compiled']:.1f} compiled; warm-up {r['compile_warm_up_s']:.0f} s; "
                  f"a pass compiled / eager: {r['compiled_over_eager_cpu_time']:.2f}",
                  "Predicted GPU realized/ideal, eager table: " + ", ".join(
                      f"bs{n} {r[f'predicted_gpu_eager_realized_over_ideal_bs{n}']:.2f}" for n in (1, 64, 256))]
    if "occupancy_bs64" in r:
        lines += [f"Exit engine on {r['engine_inputs']}: {r['layer_calls_bs64']} layer calls at bs64, "
                  f"{r['layer_calls_bs256']} at bs256; distinct shapes {r['distinct_shapes']} of "
                  f"{r['declared_shapes']} declared; exits per layer {r['exit_histogram_stream']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
