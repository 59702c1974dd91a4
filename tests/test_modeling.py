import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
import transformers

from conftest import CLASSIC, KINDS, TINY_CONFIGS, TRANSFORMERS_CLASSES, varied_batch
from pabee.early_exit.batch_rows import LayerInputs
from pabee.early_exit.rules import EntropyRule, FixedRule, PatienceRule
from pabee.early_exit.sweep import exit_stats
from pabee.modeling.backbones import BACKBONES as REGISTRY
from pabee.modeling.model import PabeeOutput
from pabee.scoring.report import exit_line

BACKBONES = {
    kind: (REGISTRY[kind].load_model_class(), *(getattr(transformers, c) for c in TRANSFORMERS_CLASSES[kind]),
           TINY_CONFIGS[kind])
    for kind in KINDS
}


def test_every_registered_backbone_is_tested_here():
    assert set(TRANSFORMERS_CLASSES) == set(TINY_CONFIGS) == set(KINDS)


def make(kind, **config):
    cls, _, _, make_config = BACKBONES[kind]
    return cls(make_config(**config)).eval()


def backbone_of(model):
    return getattr(model, model.base_model_prefix)


def use_attention(model, attn):
    if attn == "sdpa" and not model._supports_sdpa:
        pytest.skip(f"{type(model).__name__} has no sdpa attention in transformers")
    model.set_attn_implementation(attn)


def heads_of(model):
    return [model.exit_head(i) for i in range(model.num_layers)]


# --- 1. loading and names -------------------------------------------------------------

def original_bert_keys(layers):
    keys = [f"embeddings.{n}_embeddings.weight" for n in ("word", "position", "token_type")]
    keys += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias", "pooler.dense.weight", "pooler.dense.bias"]
    for i in range(layers):
        for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                     "output.dense", "output.LayerNorm"):
            keys += [f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"]
    return ["bert." + k for k in keys]


def original_albert_keys(groups, inner):
    keys = [f"embeddings.{n}_embeddings.weight" for n in ("word", "position", "token_type")]
    keys += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias", "pooler.weight", "pooler.bias",
             "encoder.embedding_hidden_mapping_in.weight", "encoder.embedding_hidden_mapping_in.bias"]
    for g in range(groups):
        for j in range(inner):
            for part in ("full_layer_layer_norm", "attention.query", "attention.key", "attention.value",
                         "attention.dense", "attention.LayerNorm", "ffn", "ffn_output"):
                keys += [f"encoder.albert_layer_groups.{g}.albert_layers.{j}.{part}.{w}" for w in ("weight", "bias")]
    return ["albert." + k for k in keys]


@pytest.mark.parametrize("kind", CLASSIC)
def test_parameter_names_are_transformers_and_original_checkpoints_load(kind, tmp_path):
    """The model's names are transformers' XForSequenceClassification's (the last head is
    `classifier`) plus `classifiers.{i}` below; a checkpoint of the original code or the research
    port (the last head as classifiers.{L-1}) loads through load_model with nothing missing or
    unexpected, each head where it was."""
    from pabee.modeling.backbones import load_model

    model = make(kind, num_hidden_groups=2, inner_group_num=2) if kind == "albert" else make(kind)
    layers = model.config.num_hidden_layers
    plain = original_bert_keys(layers) if kind == "bert" else original_albert_keys(2, 2)
    heads = [f"classifiers.{i}.{w}" for i in range(layers - 1) for w in ("weight", "bias")]
    assert set(model.state_dict()) == set(plain + heads + ["classifier.weight", "classifier.bias"])
    # the parameters in the original order (last head last): optimizer states of its checkpoints resume in place
    renamed = [n.replace("classifier.", f"classifiers.{layers - 1}.") for n, _ in model.named_parameters()]
    assert renamed[-2 * layers:] == [f"classifiers.{i}.{w}" for i in range(layers) for w in ("weight", "bias")]
    original = {k: torch.randn_like(v) for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    original |= {f"classifiers.{layers - 1}.{w}": torch.randn_like(getattr(model.classifier, w)) for w in ("weight", "bias")}
    model.config.save_pretrained(tmp_path)
    save_file(original, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = load_model(REGISTRY[kind], str(tmp_path), None, "cpu")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for i in range(layers):
        assert torch.equal(loaded.exit_head(i).weight, original[f"classifiers.{i}.weight"])
    assert all(torch.equal(loaded.state_dict()[k], original[k]) for k in plain)
    cut, info = load_model(REGISTRY[kind], str(tmp_path), None, "cpu", num_hidden_layers=2)  # its own layer-2 head
    assert torch.equal(cut.classifier.weight, original["classifiers.1.weight"]) and not info["unexpected_keys"]
    loaded.save_pretrained(tmp_path / "saved")  # and from a folder saved today (the last head as `classifier`)
    cut = load_model(REGISTRY[kind], str(tmp_path / "saved"), None, "cpu", num_hidden_layers=2)[0]
    assert torch.equal(cut.classifier.bias, original["classifiers.1.bias"])


@pytest.mark.parametrize("kind", KINDS)
def test_from_plain_backbone_then_round_trip(kind, tmp_path):
    cls, plain_cls, _, make_config = BACKBONES[kind]
    plain = plain_cls(make_config())
    plain.save_pretrained(tmp_path / "plain")
    model = cls.from_pretrained(tmp_path / "plain", num_labels=3).eval()
    assert model.config.num_labels == 3 and len(heads_of(model)) == model.config.num_hidden_layers
    ours = backbone_of(model).state_dict()
    assert {name for name in plain.state_dict() if name not in ours} <= {"pooler.dense.weight", "pooler.dense.bias"}
    for name, value in ours.items():
        torch.testing.assert_close(value, plain.state_dict()[name], rtol=0, atol=0)
    model.set_patience(2)
    model.save_pretrained(tmp_path / "pabee")
    assert (tmp_path / "pabee" / "model.safetensors").exists()
    loaded = cls.from_pretrained(tmp_path / "pabee").eval()
    ids, mask = varied_batch(8)
    a, b = model(input_ids=ids, attention_mask=mask), loaded(input_ids=ids, attention_mask=mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.exit_layers, b.exit_layers)


# --- 2. heads ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CLASSIC)
def test_one_linear_head_per_layer_with_training_dropout(kind):
    model = make(kind, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 **({"classifier_dropout_prob": 0.5} if kind == "albert" else {}))
    heads = heads_of(model)
    assert len(heads) == 4 and all(isinstance(h, torch.nn.Linear) for h in heads)
    assert all((h.in_features, h.out_features) == (32, 3) for h in heads)
    expected_p = model.config.classifier_dropout_prob if kind == "albert" else model.config.hidden_dropout_prob
    assert model.dropout.p == expected_p
    ids, mask = varied_batch(6)
    with torch.no_grad():
        eval_logits = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True).all_layer_logits
        hidden = model.embed(ids, mask, None, None, None)
        inputs = model.layer_inputs(hidden, mask, None)
        for i in range(4):
            hidden = model.run_layer(i, hidden, inputs)
            shared_pooler = backbone_of(model).pooler
            assert shared_pooler is not None
            torch.testing.assert_close(eval_logits[:, i], heads[i](shared_pooler_output(model, hidden)))
        if kind == "albert":
            model.train()
            train_logits = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True).all_layer_logits
            assert not torch.allclose(train_logits, eval_logits)


def shared_pooler_output(model, hidden):
    """The backbone's own pooled output, computed by transformers' pooler modules."""
    if hasattr(model, "bert"):
        return model.bert.pooler(hidden)
    return model.albert.pooler_activation(model.albert.pooler(hidden[:, 0]))


# --- 3. loss ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_labels", [1, 3])
def test_weighted_loss_recomputed_by_hand(kind, num_labels):
    model = make(kind, num_labels=num_labels).train()
    ids, mask = varied_batch(10)
    labels = torch.randn(10) if num_labels == 1 else torch.randint(0, num_labels, (10,))
    torch.manual_seed(1)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_all_layer_logits=True)
    per_layer = out.all_layer_logits
    assert per_layer.shape == (10, 4, num_labels)
    total, weights = 0.0, 0
    for i, logits in enumerate(per_layer.unbind(1), start=1):
        if num_labels == 1:
            loss_i = ((logits.view(-1) - labels) ** 2).mean()
        else:
            loss_i = -F.log_softmax(logits, -1)[torch.arange(10), labels].mean()
        total, weights = total + i * loss_i, weights + i
    torch.testing.assert_close(out.loss, total / weights)
    uniform = sum(F.cross_entropy(l, labels) if num_labels > 1 else F.mse_loss(l.view(-1), labels)
                  for l in per_layer.unbind(1)) / 4
    assert not torch.allclose(out.loss, uniform)
    out.loss.backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in heads_of(model))


# --- 4. patience 0 equals transformers' own classifier ----------------------------------

@pytest.mark.parametrize("kind,groups,inner", [("albert", 2, 1), ("albert", 1, 2), ("albert", 2, 2)]
                         + [(kind, 1, 1) for kind in KINDS])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_patience_zero_equals_transformers_classifier(kind, groups, inner, attn):
    cls, _, reference_cls, make_config = BACKBONES[kind]
    extra = {"num_hidden_groups": groups, "inner_group_num": inner} if kind == "albert" else {}
    config = make_config(num_labels=3, **extra)
    model = cls(config).eval()
    model.set_patience(0)
    reference = reference_cls(make_config(num_labels=3, **extra)).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("classifiers.")},
                              strict=True)
    use_attention(model, attn)
    reference.set_attn_implementation(attn)
    ids, mask = varied_batch(16)
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask)
        theirs = reference(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours.logits, theirs, rtol=0, atol=1e-6)
    assert ours.exit_layers.tolist() == [4] * 16


# --- 5 and 6. patience exit, batch equals one example at a time -------------------------

def original_exit_at_batch_size_1(model, ids, mask, patience, threshold):
    """The original algorithm (one example, scalar counter, break), written independently."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True)
    layers = out.all_layer_logits[0]
    if patience == 0:
        return layers.shape[0], layers[-1]
    counter, previous = 0, None
    for i, logits in enumerate(layers, start=1):  # noqa: B007 - i is the exit layer, returned after the loop
        if layers.shape[-1] == 1:
            same = previous is not None and abs(float(previous - logits)) < threshold
        else:
            same = previous is not None and int(previous.argmax()) == int(logits.argmax())
        counter = counter + 1 if same else 0
        previous = logits
        if counter == patience:
            break
    return i, logits


def configure(kind, num_labels, attn=None, pooling="first", **config):
    """A 5-layer model whose heads disagree often; attn None: sdpa where the backbone has it."""
    extra = {"num_hidden_groups": 2, "inner_group_num": 2} if kind == "albert" else {}
    model = make(kind, num_labels=num_labels, layers=5, exit_pooling=pooling, **extra, **config)
    use_attention(model, attn or ("sdpa" if model._supports_sdpa else "eager"))
    for head in heads_of(model) + ([model.lte] if hasattr(model, "lte") else []):  # spread opinions: exits vary
        torch.nn.init.normal_(head.weight, std=2.0)
    return model


def assert_batch_exits_equal_one_at_a_time(model, ids, mask, rule):
    """Every example of the batch exits where it exits alone, without its padding, with the same logits."""
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, exit_rule=rule)
        for j in range(len(ids)):
            n = int(mask[j].sum())
            one = model(input_ids=ids[j:j + 1, :n], attention_mask=mask[j:j + 1, :n], exit_rule=rule)
            assert int(one.exit_layers[0]) == int(batch.exit_layers[j]), (rule.name, j)
            torch.testing.assert_close(one.logits[0], batch.logits[j], rtol=1e-4, atol=1e-5)


def agreement_threshold(model, ids, mask):
    """A regression threshold that about half the neighbouring layers meet, whatever the heads'
    scale, in the widest gap between the middle differences so that rounding cannot flip one."""
    with torch.no_grad():
        values = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True).all_layer_logits[..., 0]
    gaps = (values[:, 1:] - values[:, :-1]).abs().flatten().sort().values
    middle = gaps[len(gaps) // 4: 3 * len(gaps) // 4]
    k = int((middle[1:] - middle[:-1]).argmax())
    return float(middle[k] + middle[k + 1]) / 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("attn,pooling", [("sdpa", "first"), ("eager", "first"), ("sdpa", "mean")])
def test_batch_exit_equals_one_example_at_a_time(kind, num_labels, attn, pooling):
    model = configure(kind, num_labels, attn, pooling)
    ids, mask = varied_batch(64, seed=3)
    threshold = agreement_threshold(model, ids, mask) if num_labels == 1 else 0.5
    spread = set()
    for patience in range(0, model.config.num_hidden_layers + 2):
        model.set_patience(patience, regression_threshold=threshold)
        with torch.no_grad():
            batch = model(input_ids=ids, attention_mask=mask)
        assert batch.exit_layers.dtype == torch.long and batch.logits.shape == (64, num_labels)
        for j in range(64):
            length = int(mask[j].sum())
            one_ids, one_mask = ids[j:j + 1, :length], mask[j:j + 1, :length]
            with torch.no_grad():
                single = model(input_ids=one_ids, attention_mask=one_mask)
            layer, logits = original_exit_at_batch_size_1(model, one_ids, one_mask, patience, threshold)
            assert int(batch.exit_layers[j]) == int(single.exit_layers[0]) == layer, (patience, j)
            torch.testing.assert_close(batch.logits[j], single.logits[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(single.logits[0], logits, rtol=1e-4, atol=1e-5)
        spread.add(len(set(batch.exit_layers.tolist())))
    assert max(spread) >= 3, "heads should make exits vary, or the test proves little"


@pytest.mark.parametrize("kind", KINDS)
def test_exited_rows_leave_the_batch(kind):
    model = configure(kind, 3, None)
    model.set_patience(1)
    rows_per_layer = []
    run_layer = model.run_layer

    def counting(i, hidden, inputs):
        rows_per_layer.append(hidden.shape[0])
        assert isinstance(inputs, LayerInputs) and inputs.rows
        for value in inputs.rows.values():
            for part in value if isinstance(value, tuple) else [value]:
                assert part is None or part.shape[0] == hidden.shape[0]
        return run_layer(i, hidden, inputs)

    model.run_layer = counting
    ids, mask = varied_batch(40, seed=5)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    expected = [int((out.exit_layers >= i).sum()) for i in range(1, 6)]
    expected = [n for n in expected if n > 0]
    assert rows_per_layer == expected
    assert rows_per_layer[-1] < 40


def test_batch_all_exiting_at_k_costs_k_layers():
    model = make("bert", num_labels=2, layers=6)
    for head in heads_of(model):  # every head predicts class 0: all examples agree at once
        torch.nn.init.zeros_(head.weight)
        head.bias.data = torch.tensor([1.0, 0.0])
    calls = []
    run_layer = model.run_layer
    model.run_layer = lambda i, h, m: calls.append(i) or run_layer(i, h, m)
    ids, mask = varied_batch(12)
    model.set_patience(2)
    out = model(input_ids=ids, attention_mask=mask)
    assert out.exit_layers.tolist() == [3] * 12 and calls == [0, 1, 2]


class HostWaits(TorchDispatchMode):
    """Counts the reads after which the host must wait for the device (on CUDA): operations
    with data-dependent sizes (nonzero, masked_select), values read back (item, bool) and
    Tensor.tolist (which reads CPU memory without dispatching an operation)."""

    WAITING = ("aten.nonzero", "aten._local_scalar_dense", "aten.masked_select", "aten.is_nonzero")

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += str(func).startswith(self.WAITING)
        return func(*args, **(kwargs or {}))


def host_waits(model, ids, mask, monkeypatch, **kwargs):
    tolist = torch.Tensor.tolist
    with torch.no_grad(), HostWaits() as waits:
        monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (setattr(waits, "count", waits.count + 1), tolist(t))[1])
        out = model(input_ids=ids, attention_mask=mask, **kwargs)
    monkeypatch.undo()
    return waits.count, out


def counting_windows(rule):
    """The rule, with its `waits` (asked once at the end of every window) counted."""
    calls = []
    waits = rule.waits
    rule.waits = lambda state: calls.append(1) or waits(state)
    return rule, calls


@pytest.mark.parametrize("kind", KINDS)
def test_one_host_wait_per_window(kind, monkeypatch):
    """The exit loop waits for the device once per window (to learn which rows exit and how
    many layers may run next), at most once per layer from the earliest exit on, and never
    for patience 0 or the one-pass sweep."""
    model = configure(kind, 3, None)
    layers = model.config.num_hidden_layers
    ids, mask = varied_batch(24, seed=4)
    model.set_patience(0)
    backbone_waits, _ = host_waits(model, ids, mask, monkeypatch)  # the padding mask is checked once
    sweep_waits, _ = host_waits(model, ids, mask, monkeypatch, output_all_layer_logits=True)
    assert sweep_waits == backbone_waits
    rules = [PatienceRule(p) for p in range(1, layers)] + [EntropyRule(0.8), FixedRule(2)]
    for rule in rules:
        rule, windows = counting_windows(rule)
        waits, out = host_waits(model, ids, mask, monkeypatch, exit_rule=rule)
        checked_layers = max(min(int(out.exit_layers.max()), layers - 1) - rule.earliest_exit + 1, 0)
        assert waits - backbone_waits == len(windows) <= checked_layers, rule.__class__.__name__
        assert len(windows) >= (int(out.exit_layers.min()) < layers)


@pytest.mark.parametrize(("predicted", "patience", "heads_run", "windows", "exit_layer"), [
    ("alternating", 2, [0, 1, 2, 4], 1, 5),  # window 3, counter 0 after it, 2 more reach layer 5
    ("alternating", 1, [0, 1, 2, 3, 4], 3, 5),  # windows 2, 1, 1 then the last layer
    ("constant", 2, [0, 1, 2], 1, 3),
    ("constant", 4, [4], 0, 5),  # the first window would reach the last layer: no check
    ("alternating", 0, [4], 0, 5),
])
def test_heads_run_only_where_they_can_matter(predicted, patience, heads_run, windows, exit_layer):
    model = make("bert", num_labels=2, layers=5)
    for i, head in enumerate(heads_of(model)):
        torch.nn.init.zeros_(head.weight)
        head.bias.data = torch.tensor([1.0, 0.0] if predicted == "constant" or i % 2 == 0 else [0.0, 1.0])
    called = []
    for i, head in enumerate(heads_of(model)):
        head.register_forward_hook(lambda module, args, output, i=i: called.append(i))
    rule, checks = counting_windows(PatienceRule(patience))
    ids, mask = varied_batch(6)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, exit_rule=rule)
    assert called == heads_run and len(checks) == windows
    assert out.exit_layers.tolist() == [exit_layer] * 6


# --- 8. outputs, 9. settings, 10. statistics --------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_outputs_and_all_layer_logits(kind):
    model = configure(kind, 3, None)
    model.set_patience(1)
    ids, mask = varied_batch(20)
    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask)
        full = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True)
    assert isinstance(fast, PabeeOutput) and fast.all_layer_logits is None
    assert full.all_layer_logits.shape == (20, 5, 3)
    assert fast.exit_layers.min() >= 1 and fast.exit_layers.max() <= 5
    assert torch.equal(fast.exit_layers, full.exit_layers)
    picked = full.all_layer_logits[torch.arange(20), full.exit_layers - 1]
    torch.testing.assert_close(fast.logits, picked, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_settings_saved_validated_and_patience_above_depth(kind, tmp_path):
    model = configure(kind, 1, None)
    assert model.config.patience == 0 and model.config.regression_threshold == 0.0
    model.set_patience(3, regression_threshold=0.25)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    assert (loaded.config.patience, loaded.config.regression_threshold) == (3, 0.25)
    loaded.set_patience(2)
    assert loaded.config.regression_threshold == 0.25
    with pytest.raises(ValueError, match="-1"):
        model.set_patience(-1)
    with pytest.raises(ValueError, match="-0.5"):
        model.set_patience(1, regression_threshold=-0.5)
    model = configure(kind, 3, None).eval()
    ids, mask = varied_batch(16)
    model.set_patience(0)
    full = model(input_ids=ids, attention_mask=mask)
    model.set_patience(9)
    above = model(input_ids=ids, attention_mask=mask)
    assert above.exit_layers.tolist() == [5] * 16
    torch.testing.assert_close(above.logits, full.logits)


def test_exit_stats_and_original_log_line():
    stats = exit_stats(torch.tensor([1, 2, 3, 2]), 6)
    assert stats["mean_exit_layer"] == 2.0
    assert stats["speed_up"] == 3.0
    assert abs(stats["original_speed_up"] - (1 - 2 / 6)) < 1e-12
    line = exit_line("patience", 4, **stats)
    assert line.startswith("*** Patience = 4 Avg. Inference Layers = 2.00 Speed Up = 0.67 ***")
    assert "3.00" in line
