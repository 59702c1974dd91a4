import json
import math

import pytest
import torch
from torch.nn import functional as F

import run_glue
from pabee.early_exit.rules import ConfidenceRule, EntropyRule, FixedRule, PatienceRule
from pabee.early_exit.sweep import exit_layers_from_logits, logits_at_exit
from conftest import KINDS, varied_batch
from test_modeling import assert_batch_exits_equal_one_at_a_time, configure

SETTINGS = [
    ("patience", [PatienceRule(p, 0.5) for p in range(0, 7)]),
    ("entropy", [EntropyRule(t) for t in (0.0, 0.3, 0.6, 0.9, 1.2)]),
    ("confidence", [ConfidenceRule(t) for t in (0.4, 0.6, 0.8, 0.95, 1.0)]),
    ("fixed", [FixedRule(k) for k in range(1, 7)]),
]


def at_quantiles(rules, all_logits):
    """Entropy and confidence thresholds at quantiles of the model's own values (midway between
    two of them), so that exits spread whatever the heads' scale; other settings as given."""
    if not rules or not isinstance(rules[0], (EntropyRule, ConfidenceRule)):
        return rules
    probs = F.softmax(all_logits[:, :-1], -1)
    values = (-(probs * probs.log()).sum(-1) if isinstance(rules[0], EntropyRule) else probs.max(-1).values)
    ordered = values.flatten().sort().values
    cuts = [int(q * len(ordered)) for q in (0.1, 0.3, 0.5, 0.7, 0.9)]
    return [type(rules[0])(float(ordered[k - 1] + ordered[k]) / 2) for k in cuts]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("criterion,rules", SETTINGS)
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_one_pass_sweep_equals_real_early_exit(kind, criterion, rules, pooling):
    model = configure(kind, 3, None, pooling)
    ids, mask = varied_batch(48, seed=11)
    with torch.no_grad():
        all_logits = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True).all_layer_logits
        seen = set()
        for rule in at_quantiles(rules, all_logits):
            real = model(input_ids=ids, attention_mask=mask, exit_rule=rule)
            swept = exit_layers_from_logits(all_logits, rule)
            assert torch.equal(real.exit_layers, swept)
            torch.testing.assert_close(real.logits, logits_at_exit(all_logits, swept), rtol=1e-4, atol=1e-5)
            seen.add(float(swept.float().mean()))
    assert len(seen) >= 3, "settings should give different exits"


@pytest.mark.parametrize("criterion,rules", SETTINGS[1:])
def test_baseline_criteria_in_batches_equal_one_example_at_a_time(criterion, rules):
    model = configure("bert", 3, "sdpa")
    ids, mask = varied_batch(24, seed=12)
    for rule in rules:
        assert_batch_exits_equal_one_at_a_time(model, ids, mask, rule)


def test_criteria_follow_their_definitions():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 5.0]],
                           [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])  # [batch 2, layers 3, 3 classes]
    probs = F.softmax(logits, -1)
    entropy = -(probs * probs.log()).sum(-1)
    for t in (0.5, 0.9, 1.05):
        expected = [next((i + 1 for i in range(2) if entropy[b, i] < t), 3) for b in range(2)]
        assert exit_layers_from_logits(logits, EntropyRule(t)).tolist() == expected
    for t in (0.5, 0.7, 0.9):
        expected = [next((i + 1 for i in range(2) if probs[b, i].max() >= t), 3) for b in range(2)]
        assert exit_layers_from_logits(logits, ConfidenceRule(t)).tolist() == expected
    assert exit_layers_from_logits(logits, FixedRule(2)).tolist() == [2, 2]
    assert exit_layers_from_logits(logits, FixedRule(9)).tolist() == [3, 3]
    assert math.isclose(float(entropy[1, 0]), math.log(3), rel_tol=1e-6)


TRAIN = ["--do_train", "--do_eval", "--do_lower_case", "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3",
         "--num_train_epochs", "2", "--logging_steps", "100", "--save_steps", "1000", "--seed", "3"]


def glue_args(world, out, *extra, task="SST-2", model=None):
    return ["--model_type", "bert", "--model_name_or_path", str(model or world / "bert"), "--task_name", task,
            "--data_dir", str(world / "glue" / task), "--output_dir", str(out), "--do_lower_case", *extra]


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "out"
    assert run_glue.main(glue_args(world, out, *TRAIN[:1], *TRAIN[3:])) == 0
    return out


def rows_of(out, name="eval_results.json"):
    return json.loads((out / name).read_text())


@pytest.mark.parametrize("criterion,settings", [("patience", "0,1,2,3,5"), ("entropy", "0.2,0.5,0.65"),
                                                ("confidence", "0.6,0.8,0.95"), ("fixed", "1,2,4")])
def test_sweep_and_timed_inference_give_the_same_results(world, trained, tmp_path, criterion, settings, capsys):
    flag = ["--patience", settings] if criterion == "patience" else ["--exit_thresholds", settings]
    common = ["--do_eval", "--exit_criterion", criterion, *flag, "--per_gpu_eval_batch_size", "7"]
    sweep_dir, timed_dir = tmp_path / "sweep", tmp_path / "timed"
    for out, extra in ((sweep_dir, []), (timed_dir, ["--timed_inference"])):
        assert run_glue.main(glue_args(world, out, *common, *extra, model=trained)) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("*** ")]
    assert len(lines) == 2 * len(settings.split(","))
    assert all("wall-clock" in l for l in lines[len(lines) // 2:]) and not any("wall-clock" in l for l in lines[:len(lines) // 2])
    sweep, timed = rows_of(sweep_dir), rows_of(timed_dir)
    assert [r["setting"] for r in sweep] == [type(sweep[0]["setting"])(s) for s in settings.split(",")]
    for a, b in zip(sweep, timed, strict=True):
        assert (a["criterion"], a["setting"], a["acc"], a["mean_exit_layer"]) == (
            b["criterion"], b["setting"], b["acc"], b["mean_exit_layer"])
        assert "wallclock_speed_up" not in a
        assert b["wallclock_min"] <= b["wallclock_speed_up"] <= b["wallclock_max"]
        if criterion == "patience" and b["setting"] == 0:  # full depth is not timed against itself
            assert b["wallclock_min"] == b["wallclock_speed_up"] == b["wallclock_max"] == 1.0
            assert b["seconds"] == b["full_depth_seconds"]


def test_per_layer_rows_equal_fixed_exits_and_report_files(world, trained, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_glue.main(glue_args(world, out, "--do_eval", "--patience", "1,2", model=trained)) == 0
    assert run_glue.main(glue_args(world, out, "--do_eval", "--exit_criterion", "fixed", "--exit_thresholds",
                                   "1,2,3,4", model=trained)) == 0
    assert "*** fixed = 3 Avg. Inference Layers = 3.00" in capsys.readouterr().out
    rows = rows_of(out, "pabee_results.json")
    by = {(r["criterion"], r["setting"]): r for r in rows}
    assert {c for c, _ in by} == {"patience", "layer", "fixed"}, "runs on one output_dir add up"
    for layer in range(1, 5):
        assert by["layer", layer]["acc"] == by["fixed", layer]["acc"]
        assert by["layer", layer]["mean_exit_layer"] == layer and by["layer", layer]["speed_up"] == 4 / layer
    table = (out / "pabee_results.md").read_text().splitlines()
    assert table[0].startswith("| checkpoint | task | criterion | setting | acc | mean exit layer | speed-up")
    assert len(table) == 2 + len(rows)
    assert "| final | sst-2 | patience | 2 |" in "\n".join(table)
    png = (out / "pabee_tradeoff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [EventAccumulator(str(p)).Reload() for p in (out / "runs").glob("events.*")]
    tags = {t for e in events for t in e.Tags()["scalars"]}
    assert {"pabee/sst-2/patience=2/acc", "pabee/sst-2/layer=3/speed_up", "pabee/sst-2/fixed=1/acc"} <= tags


@pytest.mark.parametrize("argv,message", [
    (["--task_name", "STS-B", "--exit_criterion", "entropy", "--exit_thresholds", "0.1"],
     "--exit_criterion entropy needs class probabilities and STS-B is a regression task"),
    (["--exit_criterion", "confidence"], "--exit_criterion confidence needs --exit_thresholds"),
    (["--exit_criterion", "fixed", "--exit_thresholds", "0,2"], "bad --exit_thresholds '0,2'"),
    (["--exit_criterion", "entropy", "--exit_thresholds", "0.1,-1"], "bad --exit_thresholds '0.1,-1'"),
    (["--exit_thresholds", "0.5"], "--exit_thresholds is for the baseline criteria"),
])
def test_bad_exit_settings(argv, message, capsys):
    base = ["--model_type", "bert", "--model_name_or_path", "m", "--task_name", "SST-2", "--output_dir", "o",
            "--do_eval"]
    assert run_glue.main(base + argv) == 2  # the last of a repeated flag wins
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_timings_whose_rounds_disagree_are_flagged():
    from pabee.scoring.result_rows import ResultRow, unsteady

    def timed(low, mid, high):
        return ResultRow("final", "sst-2", "patience", 2, 10, 3.0, 2.0, 0.5, {"acc": 1.0}, 1.0, 2.0, mid, low, high)

    assert not unsteady(timed(1.9, 2.0, 2.1)) and unsteady(timed(1.2, 2.0, 2.1))
    assert not unsteady(ResultRow("final", "sst-2", "patience", 2, 10, 3.0, 2.0, 0.5, {"acc": 1.0}))


def test_plot_labels_coinciding_settings_once_and_tables_lead_with_the_plotted_metric():
    from pabee.scoring.report import markdown_table, same_point_labels
    from pabee.scoring.result_rows import ResultRow

    def row(setting, f1, speed_up):
        return ResultRow("final", "mrpc", "patience", setting, 4, 6 / speed_up, speed_up, 1 - 1 / speed_up,
                         {"acc": 0.5, "f1": f1, "acc_and_f1": 0.6})

    rows = [row(0, 0.85, 1.0), row(5, 0.85, 1.0), row(3, 0.853, 1.4)]
    assert same_point_labels(rows, "f1") == {(1.0, 0.85): [0, 5], (1.4, 0.853): [3]}
    assert markdown_table(rows).splitlines()[0].startswith("| checkpoint | task | criterion | setting | f1 | acc |")
