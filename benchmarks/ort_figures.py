"""Early exit on ONNX Runtime beside the runtimes a CPU user would pick, as ratios from one run.

    python benchmarks/ort_figures.py --model_dir RUN [--patience 2] [--json PATH] [--threads 2]
    python benchmarks/ort_figures.py --smoke

A model run_glue fine-tuned (docs/performance.md: all-MiniLM-L6-v2, 6 layers, hidden 384, PABEE on
SST-2), on the SST-2 dev sentences in run_glue's evaluation order (longest first), dynamic padding
per batch, at one patience. Runs take turns batch by batch in an order drawn anew each turn
(bench_speed.paired), each batch's time the median of its repetitions, in two series: the ONNX
Runtime runs among themselves (the peer's ratios; a torch run's threads spin on after it and slow
whatever follows), then the ratios against torch:

- ort_realized_over_ideal_bs{1,32}: the exit engine on ONNX Runtime (pabee/deploy/ort_model.py) at
  patience 2 against the same engine at full depth (patience 0: the cuts joined into one graph
  without the heads below the last, one call a length bucket), over the ideal L / mean exit;
- ort_exit_over_torch_exit_bs{1,32}: its time over this project's torch engine at the same setting;
- ort_exit_over_best_full_bs{1,32}: its time over the faster of the two plain full-depth runs below;
- ort_full_over_torch_full_bs{1,32}: transformers' plain BertForSequenceClassification exported to
  one ONNX graph (export.py --onnx) on ONNX Runtime, over the same plain model in torch eager;
- ort_cuts_over_plain_bs{1,32}: the engine's full depth (its cuts joined) over that one graph
  (what the cuts cost when nothing exits);
- ort_int8_over_fp32_bs{1,32}: the engine's early exit with int8 layer graphs over fp32, and
  int8_same_predictions / int8_same_exits: the share of examples answering as at fp32.

--smoke: a narrow 3-layer BERT whose heads spread exits (workload.spread_exits) and a few examples,
in seconds; its ratios mean nothing.
"""

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_speed import paired, total_ratio  # noqa: E402
from engine_figures import narrow_model, unpadded  # noqa: E402
from pabee.deploy.onnx_graph import quantize_graph  # noqa: E402
from pabee.deploy.ort_model import ort_model, session_options  # noqa: E402
from pabee.deploy.plain_export import ONNX_FILE, plain_model, write_onnx  # noqa: E402
from pabee.early_exit.engine import Shapes, layer_step, stream  # noqa: E402
from pabee.early_exit.rules import PatienceRule  # noqa: E402
from pabee.modeling.backbones import backbone_of_folder, load_model, load_tokenizer  # noqa: E402
from workload import PATIENCE, SST2_DEV, encode, in_length_order, sample_of_batches, sentences, spread_exits  # noqa: E402
from workload import tokenizer_for  # noqa: E402

# Against the peer (issue 53): early exit within 1 / (0.85 x ideal) of the fused graph's time at fp32 and
# 1 / (0.8 x ideal) at int8; the engine's full depth (the cuts joined) within 1.05 of it.
PEER_TARGETS = {"ort_exit_over_fused_full": 0.85, "int8_exit_over_fused_int8_full": 0.8}
TARGETS = {"ort_realized_over_ideal_bs1": ">= 0.9", "ort_realized_over_ideal_bs32": ">= 0.9",
           **{f"{k}_{n}": f"<= 1 / ({share} x ideal)" for k, share in PEER_TARGETS.items() for n in ("bs1", "bs32")},
           "ort_cuts_over_fused_full_bs1": "<= 1.05", "ort_cuts_over_fused_full_bs32": "<= 1.05",
           "int8_cuts_over_fused_int8_full_bs1": "", "int8_cuts_over_fused_int8_full_bs32": "",
           "ort_exit_over_best_full_bs1": "< 1", "ort_exit_over_best_full_bs32": "< 1",
           "ort_exit_over_torch_exit_bs1": "", "ort_exit_over_torch_exit_bs32": "",
           "ort_full_over_torch_full_bs1": "", "ort_full_over_torch_full_bs32": "",
           "ort_cuts_over_plain_bs1": "", "ort_cuts_over_plain_bs32": "",
           "ort_int8_over_fp32_bs1": "", "ort_int8_over_fp32_bs32": ""}


FUSED_FILE, FUSED_INT8_FILE = "fused.onnx", "fused_int8.onnx"
# Two series of turns: the ONNX Runtime runs among themselves (a torch run's threads spin on after it
# and slowed whichever ran next, by up to 25%: the peer's ratios come from runs that take no such
# turn), then what is timed against torch.
ONNX_RUNTIME_TURNS = ("ort_exit", "ort_full", "int8_exit", "int8_full", "ort_plain", "fused_full", "fused_int8_full")
TORCH_TURNS = ("ort_exit", "torch_exit", "ort_plain", "torch_plain")


def engine(model, step, rule):
    """(predictions, exit layers), lists of tensors, of the exit engine's stream over batches, each a
    stream of its own over the batch's `examples` with its `shapes`: the engine's input as a
    tokenizer gives it (token lists, unpadded), made before the clock runs, as each graph below is
    given its padded arrays; torch's inference mode around a torch model only (ONNX Runtime needs
    none, and its peer runs without)."""

    def run(batches):
        predictions, exits = [], []
        with torch.inference_mode() if isinstance(model, torch.nn.Module) else contextlib.nullcontext():
            for b in batches:
                for answered in stream(model, rule, [b["examples"]], b["shapes"], 0, step):
                    predictions.append(answered.logits.argmax(-1))
                    exits.append(answered.exit_layers)
        return predictions, exits  # joined after the clock stops, as the graphs' answers are

    return run


def plain_runs(model, folder, rows):
    """transformers' plain model of every layer: in torch eager; as one graph on ONNX Runtime
    (export.py --onnx's); and the peer a CPU user deploys: that graph exported fused (the project's one
    exporter, pabee/deploy/onnx_graph.py: eager attention, ONNX Runtime's transformer optimizer), at fp32 and
    quantized to int8 per channel. Each graph checked against torch on `rows` (fp32 within 1e-4); every
    session run as the engine's. Returns the runs and the fused operators found."""
    import onnxruntime

    plain = plain_model(model, model.num_layers)
    write_onnx(folder, plain, rows)
    fused = write_onnx(folder, plain, rows, fuse=True, name=FUSED_FILE)[1]
    quantize_graph(folder / FUSED_FILE, folder / FUSED_INT8_FILE)
    names = ["input_ids", "attention_mask"]
    options = session_options(torch.get_num_threads())
    sessions = {file: onnxruntime.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])
                for file in (ONNX_FILE, FUSED_FILE, FUSED_INT8_FILE)}

    def eager(batches):
        with torch.inference_mode():
            return [plain(**{n: b[n] for n in names}).logits.argmax(-1) for b in batches]

    def on(session):
        return lambda batches: [torch.from_numpy(session.run(None, {n: b[n].numpy() for n in names})[0]).argmax(-1)
                                for b in batches]

    return {"torch_plain": eager, "ort_plain": on(sessions[ONNX_FILE]), "fused_full": on(sessions[FUSED_FILE]),
            "fused_int8_full": on(sessions[FUSED_INT8_FILE])}, fused


def figures(model, batches, name, folder, reps, patience, rows):
    """Every ratio of one batch size, from runs taking turns batch by batch."""
    layers = model.num_layers
    fp32, int8 = ort_model(model, folder), ort_model(model, folder, "int8")
    early, full = PatienceRule(patience), PatienceRule(0)
    plain, fused = plain_runs(model, folder, rows)
    batches = [b | {"examples": unpadded(b), "shapes": Shapes.of(len(b["input_ids"]), b["input_ids"].shape[1])}
               for b in batches]
    runs = {"ort_exit": engine(fp32, fp32.engine_step, early), "ort_full": engine(fp32, fp32.engine_step, full),
            "torch_exit": engine(model, layer_step, early), "int8_exit": engine(int8, int8.engine_step, early),
            "int8_full": engine(int8, int8.engine_step, full), **plain}
    for run in runs.values():
        run(batches[:1])  # warm-up
    seconds, answers = turns(runs, ONNX_RUNTIME_TURNS, batches, reps)
    against_torch, torch_answers = turns(runs, TORCH_TURNS, batches, reps)
    predictions, exits = joined(answers["ort_exit"])
    torch_predictions, torch_exits = joined(torch_answers["torch_exit"])
    int8_predictions, int8_exits = joined(answers["int8_exit"])
    ideal = layers / exits.float().mean().item()
    peer, peer_int8 = (torch.cat([p for batch in answers[run] for p in batch]) for run in ("fused_full", "fused_int8_full"))
    return {f"ort_realized_over_ideal_{name}": total_ratio(seconds, "ort_full", "ort_exit") / ideal,
            f"ideal_speed_up_{name}": ideal,
            f"ort_exit_over_fused_full_{name}": total_ratio(seconds, "ort_exit", "fused_full"),
            f"int8_exit_over_fused_int8_full_{name}": total_ratio(seconds, "int8_exit", "fused_int8_full"),
            f"ort_cuts_over_fused_full_{name}": total_ratio(seconds, "ort_full", "fused_full"),
            f"int8_cuts_over_fused_int8_full_{name}": total_ratio(seconds, "int8_full", "fused_int8_full"),
            f"fused_int8_same_predictions_{name}": (peer_int8 == peer).float().mean().item(),
            f"fused_operators_{name}": fused,
            f"ort_exit_over_torch_exit_{name}": total_ratio(against_torch, "ort_exit", "torch_exit"),
            f"ort_full_over_torch_full_{name}": total_ratio(against_torch, "ort_plain", "torch_plain"),
            f"ort_exit_over_best_full_{name}": sum(against_torch["ort_exit"]) / min(sum(against_torch["ort_plain"]),
                                                                                    sum(against_torch["torch_plain"])),
            f"ort_cuts_over_plain_{name}": total_ratio(seconds, "ort_full", "ort_plain"),
            f"ort_int8_over_fp32_{name}": total_ratio(seconds, "int8_exit", "ort_exit"),
            f"ort_same_exits_as_torch_{name}": bool(torch.equal(exits, torch_exits)),
            f"ort_same_predictions_as_torch_{name}": bool(torch.equal(predictions, torch_predictions)),
            f"int8_same_predictions_{name}": (int8_predictions == predictions).float().mean().item(),
            f"int8_same_exits_{name}": (int8_exits == exits).float().mean().item(),
            f"exit_histogram_{name}": torch.bincount(exits, minlength=layers + 1)[1:].tolist(),
            **{f"ms_per_example_{run}_{name}": 1000 * sum(times[run]) / len(exits)  # each from its own series
               for times, names in ((seconds, ONNX_RUNTIME_TURNS), (against_torch, ("torch_exit", "torch_plain")))
               for run in names}}


def joined(answers):
    """(predictions, exit layers) of an engine run's answers, batch after batch."""
    return (torch.cat([t for a in answers for t in a[i]]) for i in (0, 1))


def turns(runs, names, batches, reps):
    """(seconds, answers) of the runs `names` taking turns batch by batch."""
    return paired({k: (lambda b, run=runs[k]: run([b])) for k in names}, batches, reps, torch.device("cpu"),
                  shuffled=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", default=None, help="A folder run_glue wrote (its model and tokenizer).")
    p.add_argument("--patience", type=int, default=PATIENCE, help=f"The exit setting timed (default {PATIENCE}).")
    p.add_argument("--smoke", action="store_true", help="A narrow 3-layer model and a few examples, in seconds.")
    p.add_argument("--json", default=None, help="Also write the ratios here as JSON.")
    p.add_argument("--threads", type=int, default=2, help="Threads for torch and ONNX Runtime alike (default 2).")
    p.add_argument("--sst2_dev", default=str(SST2_DEV), help="SST-2's dev.tsv (default: ../shared's).")
    args = p.parse_args(argv)
    if not args.smoke and not args.model_dir:
        p.error("give --model_dir (a run_glue output folder; docs/performance.md says how to make one) or --smoke")
    torch.set_num_threads(args.threads)
    n_bs1, n_batches, reps = (4, 1, 1) if args.smoke else (64, 8, 5)
    texts, source = sentences(args.sst2_dev)
    if args.smoke:
        tokenizer, tokenization = tokenizer_for(texts)
        model = narrow_model(len(tokenizer), layers=3)
    else:
        backbone = backbone_of_folder(args.model_dir)
        model = load_model(backbone, args.model_dir, None, "cpu")[0].eval()
        tokenizer, tokenization = load_tokenizer(backbone, args.model_dir), "the run's"
    picked = sample_of_batches(in_length_order(tokenizer, texts), 32, n_batches)
    bs32 = encode(tokenizer, picked, 32, "cpu")
    bs1 = encode(tokenizer, picked[::len(picked) // n_bs1][:n_bs1], 1, "cpu")
    if args.smoke:
        spread_exits(model, bs32, args.patience)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ort-figures-") as folder:
        for name, batches in (("bs1", bs1), ("bs32", bs32)):
            results.update(figures(model, batches, name, Path(folder), reps, args.patience, bs32[0]))
    results.update(device="cpu", threads=args.threads, inputs=f"{source}, {tokenization} tokens", patience=args.patience,
                   model="narrow 3-layer BERT (smoke run: no figure to read)" if args.smoke else args.model_dir,
                   examples_bs1=len(bs1), examples_bs32=len(picked), repetitions=reps)
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def markdown(r):
    lines = [f"Device: {r['device']} ({r['threads']} threads); {r['model']}, patience {r['patience']}; inputs: "
             f"{r['inputs']}; {r['examples_bs1']} examples at bs1, {r['examples_bs32']} at bs32; runs taking turns "
             f"batch by batch, each the median of {r['repetitions']} repetitions.", "",
             "| ratio | measured | target |", "|---|---|---|"]
    lines += [f"| {k} | {r[k]:.3f} | {v} |" for k, v in TARGETS.items()]
    for n in ("bs1", "bs32"):
        lines += ["", f"{n}: ideal speed-up {r[f'ideal_speed_up_{n}']:.2f}x (exits per layer "
                      f"{r[f'exit_histogram_{n}']}); exits and predictions as torch's: "
                      f"{r[f'ort_same_exits_as_torch_{n}']}, {r[f'ort_same_predictions_as_torch_{n}']}; int8 answers "
                      f"as fp32 for {r[f'int8_same_predictions_{n}']:.1%}, exits at the same layer for "
                      f"{r[f'int8_same_exits_{n}']:.1%}; the peer's fusions {r[f'fused_operators_{n}']}, its int8 "
                      f"answers as its fp32 for {r[f'fused_int8_same_predictions_{n}']:.1%}; targets against it: "
                      + ", ".join(f"{k} <= {1 / (share * r[f'ideal_speed_up_{n}']):.3f}"
                                  for k, share in PEER_TARGETS.items()) + "; ms per example: " + ", ".join(
                          f"{run} {r[f'ms_per_example_{run}_{n}']:.2f}" for run in
                          ("torch_plain", "ort_plain", "fused_full", "fused_int8_full", "ort_full", "ort_exit",
                           "torch_exit", "int8_full", "int8_exit"))]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
