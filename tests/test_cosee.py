"""COSEE (He et al., AAAI 2025): its normalized energy signal and exit rule, its sample weights,
thresholded exits and signal calibration against hand computations, its loss against a line-by-line
transcription of the authors' training step, the schedule of its thresholds, and the regime through
run_glue (it learns, resumes bitwise across an epoch, refuses regression)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from pabee.early_exit.rules import EnergyRule, normalized_energy
from pabee.early_exit.sweep import exit_layers_from_logits
from pabee.modeling.cosee import (
    OSC_WEIGHT, CoseeBatch, CoseeSchedule, cosee_loss, exit_layers_under, head_weight_shares, osc_loss,
    sample_weights)
from pabee.modeling.losses import training_loss
from test_later_methods import glue_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cosee_weights  # noqa: E402


def test_normalized_energy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [math.log(2.0), math.log(2.0)]])
    torch.testing.assert_close(normalized_energy(logits), torch.tensor([1 / 3, 1 / 5, 1 / 5]))
    torch.testing.assert_close(normalized_energy(torch.zeros(1, 3)), torch.tensor([1 / 4]))
    huge = normalized_energy(torch.tensor([[200.0, -200.0], [-200.0, -200.0]]))  # no overflow either way
    assert huge[0] == 0.0 and abs(float(huge[1]) - 1.0) < 1e-6


def test_energy_rule_exits_at_the_first_layer_below_its_threshold():
    # signals per layer: ex 0: 1/3, 1/5, 1/5, ...; ex 1: 1/5 from layer 1; ex 2: never below 1/4
    logits = torch.tensor([
        [[0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0], [5.0, 0.0]],
        [[math.log(3.0), 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 5.0]],
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    ])
    for threshold, expected in [(0.25, [2, 1, 4]), (0.19, [4, 4, 4]), (0.21, [2, 1, 4]), (0.34, [1, 1, 1])]:
        assert exit_layers_from_logits(logits, EnergyRule(threshold)).tolist() == expected, threshold


def test_sample_weights_by_hand():
    flat = sample_weights(3, 0.0)
    torch.testing.assert_close(flat, torch.full((3, 3), 1 / 3))
    sharp = sample_weights(3, math.log(2.0))  # exp(-ln2 * |e - j|) = 1, 1/2, 1/4
    torch.testing.assert_close(sharp[0], torch.tensor([1.0, 0.5, 0.25]) / 1.75)
    torch.testing.assert_close(sharp[1], torch.tensor([0.5, 1.0, 0.5]) / 2.0)
    torch.testing.assert_close(sharp[2], torch.tensor([0.25, 0.5, 1.0]) / 1.75)


def test_exit_layers_under_each_threshold_by_hand():
    signals = torch.tensor([[0.3, 0.1], [0.5, 0.4]])  # 2 examples, 2 internal heads of 3 layers
    exits = exit_layers_under(signals, torch.tensor([0.2, 0.35, 0.6, 0.1]))
    assert exits.tolist() == [[1, 2], [0, 2], [0, 0], [2, 2]]  # 0-based; 2 is the last layer


def test_head_weight_shares_by_hand():
    # thresholds uniform in [0, 1], 3 layers. Example A (signals 0.2, 0.1) exits at head 1 for 80%
    # of them, head 2 for 10%, the last for 10%; B (0.6, 0.4): 40%, 20%, 40%
    signals = torch.tensor([[0.2, 0.1], [0.6, 0.4]])
    torch.testing.assert_close(head_weight_shares(signals, 0.0, 1.0, 0.0), torch.full((3,), 1 / 3))
    sharp = head_weight_shares(signals, 0.0, 1.0, 60.0)  # weights one-hot at the exit layer
    torch.testing.assert_close(sharp, torch.tensor([0.6, 0.15, 0.25]))
    # in [0.25, 0.35] A always exits at head 1, B at the last
    narrow = head_weight_shares(signals, 0.25, 0.35, 60.0)
    torch.testing.assert_close(narrow, torch.tensor([0.5, 0.0, 0.5]))


def test_signal_calibration_by_hand():
    # 2 internal heads, 3 examples of labels 0, 1, 1
    logits = torch.tensor([[[2.0, 0.0], [2.0, 0.0]], [[0.0, 2.0], [2.0, 0.0]], [[2.0, 0.0], [2.0, 0.0]]])
    signals = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.2, 0.05]])
    labels = torch.tensor([0, 1, 1])
    # head 0: right 0, 1 (0.1, 0.3), wrong 2 (0.2): max(0, 0.2 - 0.2 + 0.3) = 0.3
    # head 1: right 0 (0.2), wrong 1, 2 (0.4, 0.05): max(0, 0.2 - 0.225 + 0.3) = 0.275
    torch.testing.assert_close(osc_loss(logits, signals, labels), torch.tensor((0.3 + 0.275) / 2))
    # labels 0, 1, 0: head 0 is all right and does not count; head 1 right 0, 2 (0.2, 0.05), wrong 1 (0.4)
    torch.testing.assert_close(osc_loss(logits, signals, torch.tensor([0, 1, 0])), torch.tensor(0.125 - 0.4 + 0.3))
    assert float(osc_loss(logits, signals, torch.tensor([0, 1, 0]), margin=0.2)) == 0.0  # hinge at 0
    assert float(osc_loss(logits[:1], signals[:1], labels[:1])) == 0.0  # no head with both kinds


def authors_step(all_layer_logits, labels, thresholds, beta_t):
    """examples/train.py of He-Jianing/COSEE, one batch, transcribed loop for loop."""
    batch_size, num_layers, num_labels = all_layer_logits.shape
    weights_map = torch.tensor([[math.exp(-beta_t * abs(i - j)) for j in range(num_layers)] for i in range(num_layers)])
    weights_map = weights_map / weights_map.sum(-1, keepdim=True)
    signals = [1 / (1 + torch.exp(all_layer_logits[:, j]).sum(-1)) for j in range(num_layers - 1)]
    losses = []
    for threshold in thresholds:
        exit_layers = []
        for b in range(batch_size):
            layer = next((j for j in range(num_layers - 1) if signals[j][b] < threshold), num_layers - 1)
            exit_layers.append(layer)
        weights = weights_map[exit_layers]
        total = 0.0
        for j in range(num_layers):
            ce = F.cross_entropy(all_layer_logits[:, j], labels, reduction="none")
            total = total + (weights[:, j] * ce).sum()
        losses.append(total / batch_size)
    classification = sum(losses) / len(losses)
    hinges = []
    for j in range(num_layers - 1):
        right = all_layer_logits[:, j].argmax(-1) == labels
        if 0 < int(right.sum()) < batch_size:
            hinges.append(torch.clamp(signals[j][right].mean() - signals[j][~right].mean() + 0.3, min=0))
    return classification + OSC_WEIGHT * (sum(hinges) / len(hinges) if hinges else 0)


@pytest.mark.parametrize("seed,beta_t", [(0, 0.0), (1, 3.7), (2, 10.0)])
def test_cosee_loss_is_the_authors_step(seed, beta_t):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(9, 4, 3, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 3, (9,), generator=g)
    thresholds = (0.05, 0.12, 0.2, 0.3, 0.9)
    mine = cosee_loss(logits, labels, CoseeBatch(beta_t, thresholds))
    torch.testing.assert_close(mine.double(), authors_step(logits.float().double(), labels, thresholds, beta_t),
                               rtol=1e-5, atol=1e-6)
    assert torch.equal(training_loss(logits, labels, CoseeBatch(beta_t, thresholds)), mine)


def test_cosee_loss_needs_its_batch_and_gives_gradients_to_every_head():
    logits = torch.randn(6, 3, 2, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    with pytest.raises(ValueError, match="CoseeBatch"):
        training_loss(logits, labels, "cosee")
    cosee_loss(logits, labels, CoseeBatch(0.0, (0.1, 0.3))).backward()
    assert all(float(logits.grad[:, j].abs().sum()) > 0 for j in range(3))


def test_schedule_draws_from_the_previous_epochs_signal_range():
    schedule = CoseeSchedule()
    torch.manual_seed(5)
    first = schedule.batch(0, 0.5)  # an epoch's first batch, nothing seen yet: [0, 1]
    assert first.sharpness == 5.0 and len(first.thresholds) == 5 and all(0 <= t <= 1 for t in first.thresholds)
    assert (schedule.low, schedule.high) == (0.0, 1.0)
    schedule.observe(torch.tensor([[[0.0, 0.0], [9.0, 0.0]], [[math.log(3.0), 0.0], [0.0, 0.0]]]))  # 1/3, 1/5
    schedule.observe(torch.tensor([[[math.log(2.0), math.log(2.0)], [0.0, 0.0]]]))  # 1/5 again
    saved = json.loads(json.dumps(schedule.state()))
    resumed = CoseeSchedule.from_state(saved)
    for s in (schedule, resumed):
        assert s.batch(7, 0.9).thresholds != s.batch(7, 0.9).thresholds  # drawn afresh, from [0, 1] mid-epoch
        thresholds = s.batch(0, 1.0).thresholds  # the next epoch
        assert (s.low, s.high) == pytest.approx((0.2, 1 / 3)) and s.seen is None
        assert all(0.2 <= t <= 1 / 3 for t in thresholds)


def test_cosee_trains_through_run_glue_and_its_rule_evaluates(world, tmp_path, capsys):
    out = tmp_path / "out"
    assert glue_run(world, out, "--exit_training", "cosee", "--exit_criterion", "energy",
                    "--exit_thresholds", "0.05,0.1,0.2") == 0
    rows = json.loads((out / "eval_results.json").read_text())
    assert {r["criterion"] for r in rows} == {"energy"} and all(r["training"] == "cosee" for r in rows)
    layers = [r for r in json.loads((out / "pabee_results.json").read_text()) if r["criterion"] == "layer"]
    assert layers[0]["acc"] >= 0.75 and layers[-1]["acc"] >= 0.8, layers  # every head learns; chance is 0.5
    capsys.readouterr()
    assert cosee_weights.main(["--model_dir", str(out), "--glue_dir", str(world / "glue"), "--task", "SST-2",
                               "--rows", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    low, high = (float(v) for v in lines[0].split("all from ")[1].split(" to "))
    assert lines[0].startswith("50 training rows") and 0 <= low < high <= 1 and len(lines) == 13
    assert "[0.000, 1.000] (as given)" in lines[1] and f"[{low:.3f}, {high:.3f}] (the signals' own range" in lines[7]
    for block in (lines[2:7], lines[8:13]):
        shares = {line.split(":")[0].strip(): [float(v) for v in line.split(":")[1].split()] for line in block}
        assert shares["beta 0"] == [0.25] * 4  # the tiny model: 4 layers
        assert all(sum(v) == pytest.approx(1.0, abs=0.003) for v in shares.values()), lines


def test_cosee_resumes_bitwise_across_an_epoch(world, tmp_path):
    """400 examples in batches of 16: the second epoch starts after step 25 and draws from the first
    epoch's signal range, which only the checkpoint at step 25 knows."""
    from safetensors.torch import load_file

    longer = ["--exit_training", "cosee", "--max_steps", "36", "--save_steps", "25"]
    assert glue_run(world, tmp_path / "full", *longer) == 0
    state = json.loads((tmp_path / "full" / "checkpoint-25" / "trainer_state.json").read_text())
    assert state["cosee"]["high"] == 1.0 and state["cosee"]["seen"][1] < 1.0
    assert glue_run(world, tmp_path / "part", *longer, model=tmp_path / "full" / "checkpoint-25") == 0
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cosee_refuses_a_regression_task(world, tmp_path, capsys):
    import run_glue

    code = run_glue.main(["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--task_name", "STS-B",
                          "--data_dir", str(world / "glue" / "STS-B"), "--output_dir", str(tmp_path / "o"),
                          "--do_train", "--max_steps", "2", "--exit_training", "cosee"])
    assert code == 2 and "regression task" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
