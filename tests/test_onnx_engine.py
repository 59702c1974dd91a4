"""The exit engine on ONNX Runtime (pabee/deploy/onnx_cuts.py, ort_model.py): the model's cuts exported by torch.onnx and
run by the real ONNX Runtime answer as the torch engine does, for every backbone and exit rule (same
exit layers, logits within 1e-4 at fp32); the cuts are cached and made again for other weights;
predict.py and run_glue.py take --runtime onnxruntime and --quantize int8; torch stays the default."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

import predict
import run_glue
from conftest import KINDS, TINY_CONFIGS, VOCAB
from pabee.base.errors import UsageError
from pabee.early_exit.engine import Shapes, layer_step, stream
from pabee.early_exit.rules import RULES, PatienceRule, example_rule, make_rule
from pabee.modeling.backbones import BACKBONES

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                reason="onnxruntime is not installed (pip install -r requirements.txt)")
TOLERANCE = 1e-4
LAYERS = 2
ROOT = Path(__file__).resolve().parents[1]  # each layer is one more graph to export


def confident(kind, num_labels=2, sharpness=40, layers=LAYERS, **settings):
    """A tiny model whose heads are sharp enough for every rule to exit at several layers."""
    torch.manual_seed(0)
    config = TINY_CONFIGS[kind](num_labels, layers)
    for name, value in settings.items():
        setattr(config, name, value)
    model = BACKBONES[kind].load_model_class()(config).eval()
    with torch.no_grad():
        for i in range(layers):
            model.exit_head(i).weight.mul_(sharpness)
    return model


def examples(n=24, longest=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, longest + 1, (1,), generator=g))
        ids = torch.randint(5, VOCAB, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length})
    return out


def answers(model, step, rule, items, batch_size=5, rows=None):
    """(logits, exit layers) of the engine's stream, in chunks of the batch size; with `rows`, calls
    padded to those row buckets (as on a GPU)."""
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    with torch.inference_mode():
        out = list(stream(model, rule, chunks, Shapes.of(batch_size, 32, rows=rows), 0, step))
    return torch.cat([a.logits for a in out]), torch.cat([a.exit_layers for a in out])


def same_answers(model, ort, rules, items):
    """Each rule's exits on ONNX Runtime are torch's, logits within TOLERANCE, with calls of exact
    rows and padded to row buckets; returns the exit layers taken."""
    spread = set()
    for rule in rules:
        for rows in (None, (2, 4)):
            logits, exits = answers(model, layer_step, rule, items, rows=rows)
            ort_logits, ort_exits = answers(ort, ort.engine_step, rule, items, rows=rows)
            assert torch.equal(exits, ort_exits), (rule, rows)
            assert (logits - ort_logits).abs().max().item() < TOLERANCE, (rule, rows)
            spread |= set(exits.tolist())
    return spread


@pytest.mark.parametrize("kind", KINDS)
def test_every_backbone_exits_on_onnx_runtime_as_on_torch_under_every_rule(kind, tmp_path):
    from pabee.deploy.ort_model import ort_model

    model = confident(kind)
    ort = ort_model(model, tmp_path)
    rules = [example_rule(name, 1) for name, rule in RULES.items() if not rule.needs_uncertainty]
    exits = same_answers(model, ort, rules + [PatienceRule(0), make_rule("fixed", 1)], examples())
    assert exits == {1, 2}  # rows left at every layer
    assert ort.one_graph == {True: ort.one_graph[True]} and ort.one_graph[True]  # full depth: batches of 5 in one call


@pytest.mark.parametrize("kind", KINDS)
def test_at_batch_one_the_patience_graph_answers_each_example_in_one_call_as_torch(kind, tmp_path):
    """PABEE's rule as ONNX control flow over 4 layers (pabee/deploy/patience_graph.py): at batch size 1 the
    stream answers each example with one session call, with torch's exit layers and logits within 1e-4."""
    from pabee.deploy.ort_model import ort_model

    model = confident(kind, layers=4, sharpness=4)
    ort = ort_model(model, tmp_path)
    spread = set()
    for patience in (0, 1, 2, 3):
        logits, exits = answers(model, layer_step, PatienceRule(patience), examples(16), batch_size=1)
        ort_logits, ort_exits = answers(ort, ort.engine_step, PatienceRule(patience), examples(16), batch_size=1)
        assert ort.one_graph[patience == 0]  # the patience graph answered, not the layer-by-layer stream
        assert torch.equal(exits, ort_exits), patience
        assert (logits - ort_logits).abs().max().item() < TOLERANCE, patience
        spread |= set(exits.tolist())
    assert len(spread) >= 3, spread  # exits at several depths: the nested branches all ran


def test_the_patience_graph_keeps_each_weight_in_its_branch_and_the_mask_arithmetic_once(tmp_path):
    """Every weight sits in the innermost branch holding all its readers (none passes through an If
    it is not read under), and no node is made twice: the padding-mask arithmetic of every layer
    is one set of nodes in the main graph; full depth leaves the heads below the last out."""
    import onnx

    from pabee.deploy.ort_model import ort_model
    from pabee.deploy.patience_graph import nested, patience_graph

    ort = ort_model(confident("bert", layers=4), tmp_path)
    for full_depth in (False, True):
        graph = patience_graph(*ort.cut_graphs(), 2, full_depth).graph
        branches = dict(nested(graph))
        signatures = []
        for path, branch in branches.items():
            for tensor in branch.initializer:
                readers = {p for p, b in branches.items() if any(tensor.name in n.input for n in b.node)}
                assert os.path.commonprefix(list(readers)) == path, (tensor.name, path, readers)
            for node in branch.node:
                bare = onnx.NodeProto()
                bare.CopyFrom(node)
                bare.name, bare.output[:] = "", []
                signatures.append(bare.SerializeToString(deterministic=True))
        assert len(signatures) == len(set(signatures))
        gemms = sum(node.op_type == "Gemm" for _, b in branches.items() for node in b.node)
        assert gemms == (2 if full_depth else 8)  # each head: its pooler and its classifier


def pairs(n=20, seed=1):
    """Sentence pairs: token types 0 then 1, lengths unsorted."""
    return [dict(e, token_type_ids=[0] * (len(e["input_ids"]) // 2) + [1] * (len(e["input_ids"]) - len(e["input_ids"]) // 2))
            for e in examples(n, seed=seed)]


@pytest.mark.parametrize("num_labels", [3, 1])
def test_one_call_paths_take_pairs_and_unsorted_batches_as_torch(num_labels, tmp_path):
    """Full depth answers batches of unsorted sentence pairs in one call a length bucket, the patience
    graph answers pairs one at a time: both as torch (classification and regression); int8 full depth
    answers every row at the last layer."""
    from pabee.deploy.ort_model import ort_model

    model = confident("bert", num_labels=num_labels, sharpness=4, layers=3)
    ort, items = ort_model(model, tmp_path), pairs()
    for rule, batch_size in ((PatienceRule(0), 8), (PatienceRule(1, 0.1), 1)):
        logits, exits = answers(model, layer_step, rule, items, batch_size=batch_size)
        ort_logits, ort_exits = answers(ort, ort.engine_step, rule, items, batch_size=batch_size)
        assert torch.equal(exits, ort_exits) and (logits - ort_logits).abs().max().item() < TOLERANCE, rule
    assert set(ort.one_graph) == {True, False} and all(ort.one_graph.values())
    int8 = ort_model(model, tmp_path, "int8")
    logits, exits = answers(int8, int8.engine_step, PatienceRule(0), items, batch_size=8)
    assert logits.shape == (20, num_labels) and torch.isfinite(logits).all() and set(exits.tolist()) == {3}
    assert int8.one_graph[True]


def test_the_patience_graph_on_regression_and_int8(tmp_path):
    """A regression head's agreement threshold in the graph is PatienceRule's; int8 graphs join too."""
    from pabee.deploy.ort_model import ort_model

    model = confident("bert", num_labels=1, sharpness=1, layers=4)
    ort = ort_model(model, tmp_path)
    spread = set()
    for rule in (PatienceRule(1, 0.05), PatienceRule(2, 0.3)):
        logits, exits = answers(model, layer_step, rule, examples(16), batch_size=1)
        ort_logits, ort_exits = answers(ort, ort.engine_step, rule, examples(16), batch_size=1)
        assert torch.equal(exits, ort_exits) and (logits - ort_logits).abs().max().item() < TOLERANCE, rule
        spread |= set(exits.tolist())
    assert len(spread) >= 2, spread
    int8 = ort_model(model, tmp_path, "int8")
    logits, exits = answers(int8, int8.engine_step, PatienceRule(1, 0.3), examples(8), batch_size=1)
    assert logits.shape == (8, 1) and torch.isfinite(logits).all() and set(exits.tolist()) <= {2, 3, 4}


def test_learned_exits_and_regression_on_onnx_runtime(tmp_path):
    """BERxiT's learned uncertainty comes out of each layer graph; a regression head's agreement
    threshold holds as in torch."""
    from pabee.deploy.ort_model import ort_model

    model = confident("bert", num_labels=1, sharpness=1, exit_training="alternate_lte")
    ort = ort_model(model, tmp_path)
    rules = [make_rule("lte", 0.5), PatienceRule(1, 0.05), PatienceRule(1, 0.2)]
    assert len(same_answers(model, ort, rules, examples())) > 1


def test_cuts_are_cached_beside_the_model_and_made_again_for_other_weights(tmp_path):
    import onnx

    from pabee.deploy.onnx_cuts import FOLDER
    from pabee.deploy.ort_model import ort_model

    model = confident("bert")
    ort_model(model, tmp_path)
    cuts = sorted((tmp_path / FOLDER / "fp32").glob("*.onnx"))
    assert [p.name for p in cuts] == ["embed.onnx", "layer_0.onnx", "layer_1.onnx"]
    stamps = [p.stat().st_mtime_ns for p in cuts]
    ort_model(model, tmp_path)  # the same weights: nothing exported again
    assert [p.stat().st_mtime_ns for p in cuts] == stamps
    with torch.no_grad():
        model.exit_head(1).bias.add_(3.0)
    moved = ort_model(model, tmp_path)
    assert (tmp_path / FOLDER / "fp32" / "layer_1.onnx").stat().st_mtime_ns != stamps[2]
    same_answers(model, moved, [PatienceRule(1)], examples(8))
    int8 = ort_model(model, tmp_path, "int8")
    ops = {node.op_type for node in onnx.load(str(tmp_path / FOLDER / "int8" / "layer_0.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    logits, exits = answers(int8, int8.engine_step, make_rule("fixed", 1), examples(8))
    assert logits.shape == (8, 2) and torch.isfinite(logits).all() and set(exits.tolist()) == {1}


def test_a_folder_of_that_name_that_is_not_ours_stays(tmp_path):
    from pabee.deploy.onnx_cuts import FOLDER
    from pabee.deploy.ort_model import ort_model

    theirs = tmp_path / FOLDER / "fp32"
    theirs.mkdir(parents=True)
    (theirs / "model.onnx").write_text("someone's export")
    with pytest.raises(UsageError, match="holds no cuts.json: it is not this project's"):
        ort_model(confident("bert"), tmp_path)
    assert (theirs / "model.onnx").read_text() == "someone's export"


def test_a_backbone_that_does_not_export_is_refused_in_one_line(tmp_path, monkeypatch):
    from pabee.deploy.ort_model import ort_model

    def cannot(*args, **kwargs):
        raise RuntimeError("no ONNX function for aten::something\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", cannot)
    with pytest.raises(UsageError) as refused:
        ort_model(confident("distilbert"), tmp_path)
    assert str(refused.value) == ("distilbert does not export to ONNX (no ONNX function for aten::something): use "
                                  "--runtime torch")
    assert not any((tmp_path / "onnx_cuts").iterdir())  # nothing half-written left


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    """A tiny PABEE run on SST-2 (dev and test), its torch evaluation beside."""
    out = tmp_path_factory.mktemp("ort") / "run"
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--task_name", "SST-2",
                          "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_train",
                          "--do_eval", "--max_steps", "40", "--learning_rate", "3e-3", "--per_gpu_train_batch_size",
                          "16", "--save_steps", "1000", "--logging_steps", "1000", "--patience", "0,1,2",
                          "--exit_pooling", "mean"]) == 0
    return out


def evaluate_again(world, run, out, *flags):
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(run), "--task_name", "SST-2",
                          "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_eval",
                          "--patience", "0,1,2", *flags]) == 0
    return {r["patience"]: r for r in json.loads((out / "eval_results.json").read_text())}


def test_run_glue_evaluates_on_onnx_runtime_as_on_torch_and_says_what_int8_costs(world, run, tmp_path, capsys):
    torch_rows = {r["patience"]: r for r in json.loads((run / "eval_results.json").read_text())}
    ort_rows = evaluate_again(world, run, tmp_path / "fp32", "--runtime", "onnxruntime", "--timed_inference",
                              "--timing_repeats", "1")
    for p, row in torch_rows.items():
        assert ort_rows[p]["acc"] == row["acc"] and ort_rows[p]["mean_exit_layer"] == row["mean_exit_layer"]
        assert ort_rows[p]["wallclock_speed_up"] > 0  # timed by real early exit on ONNX Runtime
    assert (run / "onnx_cuts" / "fp32" / "cuts.json").is_file()  # beside the model it evaluated
    capsys.readouterr()
    int8_rows = evaluate_again(world, run, tmp_path / "int8", "--runtime", "onnxruntime", "--quantize", "int8")
    printed = capsys.readouterr().out
    for p, row in int8_rows.items():
        assert row["fp32_metric"] == torch_rows[p]["acc"]
        assert f"acc {row['acc']:.4f} (fp32 {torch_rows[p]['acc']:.4f})" in printed
    assert "main metric at fp32" in (tmp_path / "int8" / "pabee_results.md").read_text()


def predicted(run, tmp_path, *flags):
    source = tmp_path / "texts.txt"
    source.write_text("".join(f"{w} film number {i}\n" for i, w in enumerate(["good", "bad", "fine", "dull"] * 6)))
    out = tmp_path / f"answers{len(flags)}.jsonl"
    assert predict.main(["--model_dir", str(run), "--input", str(source), "--output", str(out), "--patience", "1",
                         "--batch_size", "5", *flags]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_on_onnx_runtime_answers_as_on_torch(run, tmp_path):
    on_torch, on_ort = predicted(run, tmp_path), predicted(run, tmp_path, "--runtime", "onnxruntime")
    assert len(on_torch) == 24
    assert [(a["label"], a["exit_layer"]) for a in on_torch] == [(a["label"], a["exit_layer"]) for a in on_ort]
    assert max(abs(a["probability"] - b["probability"]) for a, b in zip(on_torch, on_ort, strict=True)) < TOLERANCE
    int8 = predicted(run, tmp_path, "--runtime", "onnxruntime", "--quantize", "int8")
    assert len(int8) == 24 and all(1 <= a["exit_layer"] <= 4 for a in int8)


def test_the_first_onnx_runtime_run_says_once_that_it_exports_and_nothing_of_the_exporter(run, tmp_path):
    """predict.py as a user runs it on a run folder without graphs: one line says they are exported and
    cached (where, once for these weights); the exporter's own notes stay out; the next run says nothing."""
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "run"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("onnx_cuts"))
    source = tmp_path / "texts.txt"
    source.write_text("a good film\na dull film\n")

    def predict_once(name):
        return subprocess.run([sys.executable, "predict.py", "--model_dir", str(folder), "--input", str(source),
                               "--output", str(tmp_path / name), "--runtime", "onnxruntime"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    first, second = predict_once("a.jsonl"), predict_once("b.jsonl")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
    said = [line for line in first.stderr.splitlines() if "ONNX graphs" in line]
    assert len(said) == 1 and str(folder / "onnx_cuts" / "fp32") in said[0] and "once for these weights" in said[0]
    assert "torchvision" not in first.stderr and "pre-processing" not in first.stderr
    assert "ONNX graphs" not in second.stderr


def test_int8_results_never_land_in_the_model_folder_they_describe(world, run, capsys):
    before = (run / "eval_results.json").read_bytes()
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(run), "--task_name", "SST-2",
                          "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(run), "--do_eval",
                          "--runtime", "onnxruntime", "--quantize", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluate into another --output_dir" in err[0]
    assert (run / "eval_results.json").read_bytes() == before


def test_quantizing_without_onnx_runtime_is_one_line(run, capsys):
    assert predict.main(["--model_dir", str(run), "--quantize", "int8"]) == 2
    assert capsys.readouterr().err.strip() == ("predict.py: error: --quantize int8 quantizes ONNX Runtime's graphs: "
                                               "add --runtime onnxruntime")
