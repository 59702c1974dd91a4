"""The methods that beat PABEE, in the same code: their exit rules (F-PABEE's divergence patience,
PCEE-BERT's entropy patience, GPFEE's past ensemble, BERxiT's learning to exit) against hand
computations, batch against one example at a time, the one-pass sweep against real exits on every
backbone; their training regimes (BERxiT's alternating objectives and learning-to-exit loss,
ElasticBERT's gradient equilibrium) against hand computations, and through run_glue."""

import json
import math

import pytest
import torch
from torch.nn import functional as F

import run_glue
from conftest import KINDS, varied_batch
from pabee.early_exit.exit_settings import ExitSettings
from pabee.early_exit.rules import (
    EnergyRule, EntropyPatienceRule, JSPatienceRule, KLPatienceRule, LearnedExitRule, PastEnsembleRule,
    normalized_energy)
from pabee.early_exit.sweep import answers_at_exit, exit_layers_from_logits
from pabee.modeling.losses import batch_regime, training_loss
from test_modeling import assert_batch_exits_equal_one_at_a_time, configure, make

# [batch 3, layers 4, 3 classes]: distributions that drift apart, settle, or stay flat
LOGITS = torch.tensor([
    [[2.0, 0.0, 0.0], [2.1, 0.0, 0.1], [2.0, 0.1, 0.0], [0.0, 3.0, 0.0]],
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.1, 0.0, 0.0], [1.0, 0.1, 0.0]],
    [[0.0, 4.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 4.0, 0.0]],
])


def by_hand_counting(holds, patience, layers=4):
    """Exit layer (1-based) where `patience` consecutive layers (from layer 2 on for divergences)
    have held; the last layer when none."""
    count = 0
    for i in range(layers - 1):
        count = count + 1 if holds(i) else 0
        if patience and count == patience:
            return i + 1
    return layers


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


@pytest.mark.parametrize("patience,threshold", [(1, 0.01), (1, 0.5), (2, 0.01), (2, 0.5), (0, 0.5)])
def test_divergence_patience_follows_its_definition(patience, threshold):
    probs = F.softmax(LOGITS, -1).tolist()
    for rule, divergence in [(KLPatienceRule(patience, threshold), kl),
                             (JSPatienceRule(patience, threshold), lambda p, q: (kl(p, [(a + b) / 2 for a, b in zip(
                                 p, q, strict=True)]) + kl(q, [(a + b) / 2 for a, b in zip(p, q, strict=True)])) / 2)]:
        expected = [by_hand_counting(lambda i, divergence=divergence, b=b:
                                     i > 0 and divergence(probs[b][i], probs[b][i - 1]) < threshold, patience)
                    for b in range(3)]
        assert exit_layers_from_logits(LOGITS, rule).tolist() == expected, rule.name


@pytest.mark.parametrize("patience,threshold", [(1, 0.3), (2, 0.3), (2, 1.0), (3, 1.2)])
def test_entropy_patience_counts_consecutive_confident_layers(patience, threshold):
    probs = F.softmax(LOGITS, -1)
    entropy = (-(probs * probs.log()).sum(-1)).tolist()
    expected = [by_hand_counting(lambda i, b=b: entropy[b][i] < threshold, patience) for b in range(3)]
    assert exit_layers_from_logits(LOGITS, EntropyPatienceRule(patience, threshold)).tolist() == expected


@pytest.mark.parametrize("threshold", [0.2, 0.6, 0.9, 1.05])
def test_past_ensemble_decides_and_answers_from_the_running_average(threshold):
    probs = F.softmax(LOGITS, -1)
    rule = PastEnsembleRule(threshold)
    exits = exit_layers_from_logits(LOGITS, rule)
    answers = answers_at_exit(LOGITS, exits, rule)
    for b in range(3):
        averages = [probs[b, :i + 1].mean(0) for i in range(4)]
        entropies = [float(-(a * a.log()).sum()) for a in averages]
        layer = next((i + 1 for i in range(3) if entropies[i] < threshold), 4)
        assert int(exits[b]) == layer
        torch.testing.assert_close(answers[b].exp(), averages[layer - 1])


def test_learned_exit_reads_the_uncertainty_of_each_layer():
    uncertainty = torch.tensor([[0.9, 0.2, 0.1, 0.0], [0.6, 0.7, 0.8, 0.1], [0.05, 0.9, 0.9, 0.9]])
    for threshold, expected in [(0.1, [4, 4, 1]), (0.15, [3, 4, 1]), (0.3, [2, 4, 1]), (0.65, [2, 1, 1]), (0.01, [4, 4, 4])]:
        assert exit_layers_from_logits(LOGITS, LearnedExitRule(threshold), uncertainty).tolist() == expected


def test_paired_settings_come_from_patience_and_thresholds():
    exits = ExitSettings.parse("kl_patience", "1,2", "0.05,0.1")
    assert exits.settings == ("1_0.05", "1_0.1", "2_0.05", "2_0.1")
    rule = exits.rule("2_0.1")
    assert (rule.patience, rule.threshold) == (2, 0.1)


def rules_at_quantiles(model, ids, mask):
    """Every new rule with thresholds at quantiles of the model's own values (so that exits
    spread whatever the heads' scale)."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True)
    log_p = out.all_layer_logits[:, :-1].float().log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1).flatten().sort().values
    kl_values = (log_p[:, 1:].exp() * (log_p[:, 1:] - log_p[:, :-1])).sum(-1).flatten().sort().values

    def at(values, q):
        k = int(q * len(values))
        return float(values[k - 1] + values[k]) / 2

    rules = [KLPatienceRule(p, at(kl_values, q)) for p in (1, 2) for q in (0.3, 0.7)]
    rules += [JSPatienceRule(p, at(kl_values, q) / 4) for p in (1, 2) for q in (0.3, 0.7)]
    rules += [EntropyPatienceRule(p, at(entropy, q)) for p in (1, 2) for q in (0.3, 0.7)]
    rules += [PastEnsembleRule(at(entropy, q)) for q in (0.2, 0.5, 0.8)]
    rules += [EnergyRule(at(normalized_energy(out.all_layer_logits[:, :-1]).flatten().sort().values, q)) for q in (0.3, 0.7)]
    if out.all_layer_uncertainty is not None:
        rules += [LearnedExitRule(at(out.all_layer_uncertainty[:, :-1].flatten().sort().values, q)) for q in (0.3, 0.7)]
    return rules, out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", ["pabee", "alternate_lte"])
def test_one_pass_sweep_equals_real_early_exit(kind, training):
    model = configure(kind, 3, None, "mean", exit_training=training)
    ids, mask = varied_batch(40, seed=21)
    rules, full = rules_at_quantiles(model, ids, mask)
    seen = set()
    with torch.no_grad():
        for rule in rules:
            real = model(input_ids=ids, attention_mask=mask, exit_rule=rule)
            swept = exit_layers_from_logits(full.all_layer_logits, rule, full.all_layer_uncertainty)
            assert torch.equal(real.exit_layers, swept), rule.name
            torch.testing.assert_close(real.logits, answers_at_exit(full.all_layer_logits, swept, rule), rtol=1e-4,
                                       atol=1e-5)
            seen.add((rule.name, float(swept.float().mean())))
    assert len({mean for _, mean in seen}) >= 4, "settings should give different exits"


@pytest.mark.parametrize("kind", ["bert", "modernbert"])
def test_new_rules_in_batches_equal_one_example_at_a_time(kind):
    model = configure(kind, 3, "eager", "mean", exit_training="alternate_lte")
    ids, mask = varied_batch(16, seed=22)
    rules, _ = rules_at_quantiles(model, ids, mask)
    for rule in rules:
        assert_batch_exits_equal_one_at_a_time(model, ids, mask, rule)


# --- training regimes ---------------------------------------------------------------------------

def test_bert_xit_alternates_objectives_batch_by_batch():
    assert [batch_regime("alternate", n) for n in range(4)] == ["last", "all", "last", "all"]
    assert [batch_regime("alternate_lte", n) for n in range(3)] == ["last_lte", "internal_lte", "last_lte"]
    assert batch_regime("pabee", 1) == "pabee" and batch_regime("equilibrium", 0) == "equilibrium"


@pytest.mark.parametrize("num_labels", [3, 1])
def test_summed_and_learning_to_exit_losses_by_hand(num_labels):
    torch.manual_seed(0)
    logits = torch.randn(6, 4, num_labels)
    labels = torch.randn(6) if num_labels == 1 else torch.randint(0, 3, (6,))
    uncertainty = torch.rand(6, 4)

    def own(i):
        if num_labels == 1:
            return ((logits[:, i, 0] - labels) ** 2).mean()
        return -F.log_softmax(logits[:, i], -1)[torch.arange(6), labels].mean()

    if num_labels == 1:  # how wrong each layer is: |tanh(prediction - label)|
        deserved = torch.tanh(logits[..., 0] - labels[:, None]).abs()
    else:  # 1 where a layer's class is wrong
        deserved = (logits.argmax(-1) != labels[:, None]).float()
    lte = ((uncertainty - deserved) ** 2).mean()
    torch.testing.assert_close(training_loss(logits, labels, "all"), sum(own(i) for i in range(4)))
    torch.testing.assert_close(training_loss(logits, labels, "equilibrium"), sum(own(i) for i in range(4)))
    torch.testing.assert_close(training_loss(logits, labels, "last_lte", uncertainty=uncertainty), own(3) + lte)
    torch.testing.assert_close(training_loss(logits, labels, "internal_lte", uncertainty=uncertainty),
                               sum(own(i) for i in range(3)) + lte)


def test_gradient_equilibrium_averages_the_gradients_of_the_heads_each_layer_feeds():
    """With every head's loss summed, layer m (0-based) feeds the L - m heads from m on: gradient
    equilibrium gives it their gradients' mean instead of their sum (the embeddings: all L heads'
    mean); the heads and the shared pooler keep plain gradients."""
    model = make("bert", num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    ids, mask = varied_batch(8)
    labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(3))
    per_head = []
    for j in range(4):
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, training_regime="all", output_all_layer_logits=True)
        F.cross_entropy(out.all_layer_logits[:, j], labels).backward()
        per_head.append({n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                         for n, p in model.named_parameters()})
    model.zero_grad()
    model(input_ids=ids, attention_mask=mask, labels=labels, training_regime="equilibrium").loss.backward()
    checked = 0
    for name, p in model.named_parameters():
        if name.startswith("bert.encoder.layer."):
            m = int(name.split(".")[3])
            expected = sum(per_head[j][name] for j in range(m, 4)) / (4 - m)
        elif name.startswith("bert.embeddings."):
            expected = sum(per_head[j][name] for j in range(4)) / 4
        else:  # the shared pooler and the heads
            expected = sum(per_head[j][name] for j in range(4))
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-7)
        checked += 1
    assert checked == len(list(model.parameters()))


STEPS = ["--do_train", "--do_eval", "--max_steps", "24", "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3",
         "--logging_steps", "4", "--save_steps", "1000", "--seed", "13", "--exit_pooling", "mean"]


def glue_run(world, out, *extra, model=None):
    return run_glue.main(["--model_type", "bert", "--model_name_or_path", str(model or world / "bert"), "--task_name",
                          "SST-2", "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), *STEPS, *extra])


@pytest.mark.parametrize("regime,criterion,settings", [
    ("alternate", "entropy", ["--exit_thresholds", "0.2,0.5"]),
    ("alternate_lte", "lte", ["--exit_thresholds", "0.2,0.5"]),
    ("equilibrium", "js_patience", ["--patience", "1,2", "--exit_thresholds", "0.05"]),
    ("pabee", "past_entropy", ["--exit_thresholds", "0.2,0.5"]),
])
def test_new_regimes_train_and_their_rules_evaluate_through_run_glue(regime, criterion, settings, world, tmp_path):
    out = tmp_path / "out"
    # 36 steps: at 24 every regime sat at 0.78-0.82, where float rounding decided the test
    assert glue_run(world, out, "--exit_training", regime, "--exit_criterion", criterion, *settings,
                    "--max_steps", "36") == 0
    rows = json.loads((out / "eval_results.json").read_text())
    assert {r["criterion"] for r in rows} == {criterion} and all(r["training"] == regime for r in rows)
    layers = [r for r in json.loads((out / "pabee_results.json").read_text()) if r["criterion"] == "layer"]
    assert layers[-1]["acc"] >= 0.8, layers  # the model learns; chance is 0.5
    assert json.loads((out / "config.json").read_text())["exit_training"] == regime


def test_the_learning_to_exit_head_learns_which_layers_answer_right(world, tmp_path):
    """Trained with alternate_lte, the head's loss on dev falls well below what an untrained head
    (zero weights: uncertainty 0.5 everywhere) gives on the same model's answers; a model without
    the head cannot use the rule."""
    import copy

    from transformers import BertTokenizer

    from pabee.data import glue
    from pabee.modeling.backbones import BACKBONES, load_model
    from pabee.modeling.losses import lte_loss

    out = tmp_path / "lte"
    assert glue_run(world, out, "--exit_training", "alternate_lte", "--max_steps", "100") == 0
    examples = [line.split("\t") for line in (world / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    batch = BertTokenizer.from_pretrained(out)([e[0] for e in examples], padding=True, return_tensors="pt")
    labels = torch.tensor([int(e[1]) for e in examples])

    def lte_dev_loss(model):
        with torch.no_grad():
            outputs = model.eval()(**batch, output_all_layer_logits=True)
        return float(lte_loss(outputs.all_layer_logits, labels, outputs.all_layer_uncertainty))

    trained = load_model(BACKBONES["bert"], str(out), glue.TASKS["sst-2"], "cpu")[0]
    untrained = copy.deepcopy(trained)
    torch.nn.init.zeros_(untrained.lte.weight)
    torch.nn.init.zeros_(untrained.lte.bias)
    assert lte_dev_loss(trained) < 0.6 * lte_dev_loss(untrained)
    assert glue_run(world, tmp_path / "plain", "--exit_criterion", "lte", "--exit_thresholds", "0.5") == 2


def test_alternating_training_resumes_bitwise_at_an_odd_batch(world, tmp_path):
    from safetensors.torch import load_file

    assert glue_run(world, tmp_path / "full", "--exit_training", "alternate_lte", "--save_steps", "5") == 0
    assert glue_run(world, tmp_path / "part", "--exit_training", "alternate_lte", "--save_steps", "5",
                    model=tmp_path / "full" / "checkpoint-5") == 0
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and "lte.weight" in a and all(torch.equal(a[k], b[k]) for k in a)
