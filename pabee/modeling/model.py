"""What PABEE adds to a backbone: per-layer heads and what they read, and its losses.

Each modeling file subclasses its backbone's PreTrainedModel together with `PabeeMixin` and
says only how the backbone embeds inputs (`embed`), what its layers read besides the hidden
states (`layer_inputs`, when more than the attention mask), runs layer i (`run_layer`) and
turns a layer's summary vector into the head input (`pool`). Heads, losses and the training
forward live here once for every backbone; how examples flow through the layers at inference is
the exit engine's (pabee/early_exit/engine.py).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput

from pabee.base.choices import EXIT_POOLING, EXIT_TRAINING, LEARNS_TO_EXIT, STAGES, check_choice
from pabee.early_exit.batch_rows import LayerInputs
from pabee.early_exit.engine import exit_batch
from pabee.early_exit.rules import RULES, PatienceRule, check_setting, make_rule
from pabee.early_exit.sweep import answers_at_exit, exit_layers_from_logits
from pabee.modeling.head_layout import (
    HeldLoadReport, check_final_head, final_head_source, layer_head, log_taken_head, read_tensors, with_final_head)
from pabee.modeling.losses import layer_loss, training_loss


@dataclass
class PabeeOutput(ModelOutput):
    """loss, the logits each example answers with (its exit layer's, or the rule's answer), its
    1-based exit layer and, on request, every layer's logits stacked batch first: [batch,
    num_layers, num_labels] (and, for a model that learns to exit, every layer's uncertainty)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    exit_layers: torch.Tensor | None = None
    all_layer_logits: torch.Tensor | None = None
    all_layer_uncertainty: torch.Tensor | None = None  # learning to exit: [batch, num_layers]


class PabeeMixin:
    """Shared PABEE behaviour. The host class defines `embed`, `run_layer`, `pool` (what turns
    the summary vector of a layer into the head input, shared by every layer), `dropout` (before
    every head in training) and, before `init_pabee`, the last layer's head where
    `final_head_name` says; it may redefine `layer_inputs`, `head_states` and
    `default_exit_pooling`. The config says whether heads read the first token or the mean
    (`exit_pooling`) and which loss trains them (`exit_training`)."""

    # Parameter-name prefixes of the exit heads and what feeds them: new when loading a plain backbone.
    head_parameters = ("classifiers.", "classifier.", "lte.")
    # The last layer's head, named as transformers' XForSequenceClassification names its classifier,
    # so that a checkpoint of that class loads with only the internal heads new, and a PABEE
    # checkpoint loads there as its full-depth model.
    final_head_name = "classifier"
    # What init_pabee adds to the backbone's config (a plain export leaves them out).
    config_fields = ("patience", "exit_pooling", "exit_training", "regression_threshold", "distill_temperature",
                     "exit_criterion", "exit_setting")

    def init_pabee(self, config, final_head=None):
        """Heads for every layer but the last in `classifiers` (the last is the backbone's own
        classifier, `final_head`); a learning-to-exit head where the regime trains one. A backbone
        whose classifier is not built before (BERT, ALBERT) gives it here: it is registered after the
        heads below it, so the parameters keep the original checkpoints' order, in which the
        optimizer states of their checkpoint-N folders resume."""
        config.patience = check_setting("patience", getattr(config, "patience", 0))
        pooling = getattr(config, "exit_pooling", None) or self.default_exit_pooling(config)
        config.exit_pooling = check_choice("exit_pooling", pooling, EXIT_POOLING)
        config.exit_training = check_choice("exit_training", getattr(config, "exit_training", "pabee"), EXIT_TRAINING)
        config.regression_threshold = check_setting(
            "regression_threshold", getattr(config, "regression_threshold", 0.0)
        )
        config.distill_temperature = getattr(config, "distill_temperature", 1.0)
        if not config.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {config.distill_temperature}")
        config.exit_criterion = getattr(config, "exit_criterion", "patience")
        config.exit_setting = getattr(config, "exit_setting", None)
        self.exit_rule()  # a bad criterion or setting in the config (or a from_pretrained override) stops here
        width = (final_head or self.final_head()).in_features
        self.classifiers = nn.ModuleList([nn.Linear(width, config.num_labels) for _ in range(config.num_hidden_layers - 1)])
        if final_head is not None:
            setattr(self, self.final_head_name, final_head)
        if config.exit_training in LEARNS_TO_EXIT:  # BERxiT's LTE: one head for every layer
            self.lte = nn.Linear(width, 1)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' loading, with the last layer's head taken from where the checkpoint keeps it
        (pabee/modeling/head_layout.py: `classifiers.{L-1}` in the original PABEE code's and the research port's
        checkpoints, and in any of more layers than loaded), so that this class, transformers' Auto
        classes with trust_remote_code and the project's loader all answer with the trained head. A
        checkpoint with exit heads but none for the last layer is a ValueError. transformers' load report
        is said as it is, or, where the head was taken, in one line of what is still missing or unexpected."""
        give_info = kwargs.pop("output_loading_info", False)
        with HeldLoadReport() as report:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                                  **kwargs)
            source = model.take_final_head(pretrained_model_name_or_path, info, kwargs)
        if source is None:
            report.release()
        else:
            log_taken_head(pretrained_model_name_or_path, source, info)
        return (model, info) if give_info else model

    def take_final_head(self, path, info, options):
        """Loads the head of the last layer from the checkpoint where transformers, reading names, left
        it out (`info`: its loading info, updated), and returns the prefix it came from; None where
        transformers' loading already holds it (or the checkpoint has no head: a plain backbone)."""
        missing, unexpected = set(info["missing_keys"]), set(info["unexpected_keys"])
        keys = (set(self.state_dict()) - missing) | unexpected
        try:
            check_final_head(keys, self.num_layers, self.final_head_name)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        source, final = layer_head(self.num_layers), self.final_head()
        if final_head_source(keys, self.num_layers, self.final_head_name) != source:
            return None
        names = {source + name: name for name, _ in final.named_parameters()}
        state_dict = options.get("state_dict")
        saved = {k: state_dict[k] for k in names} if state_dict is not None else read_tensors(path, names, options)
        shapes = {k: (tuple(saved[k].shape), tuple(final.get_parameter(n).shape)) for k, n in names.items()}
        if any(old != new for old, new in shapes.values()):  # another num_labels: the head stays new
            if not options.get("ignore_mismatched_sizes"):
                raise ValueError(f"{path}: its {source}* has the shapes {[s[0] for s in shapes.values()]}, the model's "
                                 f"last head {[s[1] for s in shapes.values()]}: give the checkpoint's num_labels, or "
                                 "ignore_mismatched_sizes=True for a new head")
            info["mismatched_keys"] = set(info.get("mismatched_keys", ())) | {(k, *shapes[k]) for k in names}
            info["unexpected_keys"] = unexpected - set(names)
            return source
        with torch.no_grad():
            for key, name in names.items():
                final.get_parameter(name).copy_(saved[key])
        info["missing_keys"] = missing - {f"{self.final_head_name}.{name}" for name in names.values()}
        info["unexpected_keys"] = unexpected - set(names)
        return source

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """torch's, with the last layer's head taken from where the state dict keeps it (an original PABEE
        state dict's `classifiers.{L-1}`): pabee/modeling/head_layout.py."""
        return super().load_state_dict(with_final_head(state_dict, self.num_layers, self.final_head_name), strict, assign)

    @staticmethod
    def default_exit_pooling(config):
        """What the heads read when the config does not say: what transformers' own
        XForSequenceClassification reads (the first token), so that its full-depth answer is the
        plain class's."""
        return "first"

    def final_head(self):
        return self.get_submodule(self.final_head_name)

    def exit_head(self, i):
        """The linear head of layer i (0-based)."""
        return self.classifiers[i] if i < len(self.classifiers) else self.final_head()

    def internal_head_parameters(self):
        """What a second training stage trains: the heads of every layer but the last."""
        return [p for i in range(self.num_layers - 1) for p in self.exit_head(i).parameters()]

    def new_heads(self, missing):
        """The layers (0-based) whose head is among the parameter names `missing`."""
        last = set(self.exit_head(self.num_layers - 1).parameters())
        last_names = {name for name, p in self.named_parameters() if p in last}
        layers = {int(k.split(".")[1]) for k in missing if k.startswith("classifiers.")}
        return sorted(layers | ({self.num_layers - 1} if last_names & set(missing) else set()))

    @property
    def num_layers(self):
        return self.config.num_hidden_layers

    def set_patience(self, patience, regression_threshold=None):
        """The original's way to choose the exit: patience `patience` from now on."""
        self.config.patience = check_setting("patience", patience)
        self.config.exit_criterion = "patience"
        if regression_threshold is not None:
            self.config.regression_threshold = check_setting("regression_threshold", regression_threshold)

    def exit_rule(self):
        """The exit the config asks for when none is given: its exit_criterion at its exit_setting
        (patience: its patience), so that a saved folder answers as run_glue chose."""
        config = self.config
        if config.exit_criterion == "patience":
            return PatienceRule(config.patience, config.regression_threshold)
        if config.exit_criterion not in RULES or config.exit_setting is None:
            raise ValueError(f"exit_criterion {config.exit_criterion!r} with exit_setting {config.exit_setting!r}: give "
                             f"one of {', '.join(RULES)} and its setting (patience: the patience)")
        return make_rule(config.exit_criterion, config.exit_setting, config.regression_threshold)

    def init_head_bias(self, labels, layers):
        """Starts the heads of `layers` (0-based) at the training labels' prior: the mean label for
        regression, the log class frequencies (add-one) for classification. With zero biases (the
        original) a regression head must reach the label mean through the shared pooler and the
        backbone, since AdamW moves a bias by about the learning rate per step (see docs/real_model.md)."""
        labels = torch.as_tensor(labels)
        if self.config.num_labels == 1:
            prior = labels.double().mean().reshape(1)
        else:
            counts = torch.bincount(labels.long(), minlength=self.config.num_labels).double() + 1
            prior = (counts / counts.sum()).log()
        with torch.no_grad():
            for i in layers:
                self.exit_head(i).bias.copy_(prior.to(self.exit_head(i).bias))

    def layer_inputs(self, hidden, attention_mask, position_ids):
        """What every layer reads besides the hidden states: here the attention mask alone."""
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                         allow_is_bidirectional_skip=False)  # no host read of the mask; rows can join
        return LayerInputs({"mask": mask})

    def token_weights(self, attention_mask, hidden):
        """None when heads read the first token; for mean pooling the [batch, tokens, 1] mask of the
        unpadded tokens that `summary` averages."""
        if self.config.exit_pooling == "first":
            return None
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        return attention_mask.to(hidden.dtype).unsqueeze(-1)

    def head_states(self, hidden):
        """What the heads read of a layer's token states (ModernBERT normalises them first)."""
        return hidden

    def summary(self, hidden, weights, as_product=False):
        """What the pooler reads of one layer's states: the first token, or the mean of the unpadded
        tokens, summed and divided as transformers' ModernBERT and sentence-transformers do (so the
        full depth is theirs to the bit); a row padded into a call has no token and sums to 0.
        `as_product`: the mean as one matrix product of each token's share (the ONNX cuts': a graph
        then makes the shares once from the mask, and each layer's mean is one MatMul instead of a
        multiply, a sum over the tokens and a division, 2-4% of an int8 example at batch 1; it
        rounds otherwise than the sum, within the cuts' tolerance)."""
        if weights is None:
            return self.head_states(hidden[:, 0])
        if as_product:
            shares = weights / weights.sum(1, keepdim=True).clamp(min=1)
            return torch.matmul(shares.transpose(1, 2), self.head_states(hidden)).squeeze(1)
        return (self.head_states(hidden) * weights).sum(1) / weights.sum(1).clamp(min=1)

    def classify(self, i, hidden, weights=None):
        """Head i on one layer's states."""
        return self.heads([self.summary(hidden, weights)], i)[0][0]

    def head_input(self, pooled):
        return self.dropout(pooled) if self.training else pooled

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_all_layer_logits=False,
        exit_rule=None,
        training_regime=None,
        **kwargs,
    ):
        """Training mode: every layer's head, loss = training_loss of `training_regime` (default:
        the first stage of the config's exit_training). Inference: each example stops at its own
        exit layer under `exit_rule` (default: `exit_rule()`, the config's); with output_all_layer_logits
        every example runs full depth and exits are read from the stacked logits. In inference the
        loss (if labels) is that of the answers."""
        hidden = self.embed(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        inputs = self.layer_inputs(hidden, attention_mask, position_ids)
        weights = self.token_weights(attention_mask, hidden)
        rule = exit_rule or self.exit_rule()
        all_layer_logits = uncertainty = None
        regime = training_regime or STAGES[self.config.exit_training][0]
        if self.training:
            all_layer_logits, uncertainty = self.all_layer_logits(hidden, inputs, weights, last_only=regime == "last",
                                                                  equilibrium=regime == "equilibrium")
            logits = all_layer_logits[:, -1]
            exit_layers = torch.full((logits.shape[0],), self.num_layers, device=logits.device)
        elif output_all_layer_logits:
            all_layer_logits, uncertainty = self.all_layer_logits(hidden, inputs, weights)
            exit_layers = exit_layers_from_logits(all_layer_logits, rule, uncertainty)
            logits = answers_at_exit(all_layer_logits, exit_layers, rule)
        else:
            logits, exit_layers = exit_batch(self, hidden, inputs, weights, rule)
        loss = None
        if labels is not None and self.training:
            loss = training_loss(all_layer_logits, labels, regime, self.config.distill_temperature, uncertainty)
        elif labels is not None:
            loss = layer_loss(logits, labels)
        return PabeeOutput(loss=loss, logits=logits, exit_layers=exit_layers,
                           all_layer_logits=all_layer_logits if output_all_layer_logits else None,
                           all_layer_uncertainty=uncertainty if output_all_layer_logits else None)

    def all_layer_logits(self, hidden, inputs, weights=None, last_only=False, equilibrium=False):
        """Every layer's logits, [batch, layers, labels], and every layer's learned uncertainty
        ([batch, layers]; None without a learning-to-exit head). last_only: the last head's logits
        alone, [batch, 1, labels] (vanilla training: the other heads stay out of the graph).
        equilibrium: ElasticBERT's gradient equilibrium (Li et al., ICCV 2019, as ElasticBERT's
        released code applies it): of the gradient reaching layer i's states, what comes from
        deeper layers is scaled by (L - i - 1) / (L - i) and what comes from head i by 1 / (L - i)
        (i 0-based), so every layer receives a gradient of the same scale as the heads add up."""
        if last_only:
            for i in range(self.num_layers):
                hidden = self.run_layer(i, hidden, inputs)
            return self.classify(self.num_layers - 1, hidden, weights).unsqueeze(1), None
        summaries = []
        for i in range(self.num_layers):
            hidden = self.run_layer(i, hidden, inputs)
            if equilibrium:
                hidden = ScaleGradient.apply(hidden, 1.0 / (self.num_layers - i))
            summaries.append(self.summary(hidden, weights))
            if equilibrium:
                hidden = ScaleGradient.apply(hidden, float(self.num_layers - i - 1))
        logits, uncertainty = self.heads(summaries)
        return torch.stack(logits, dim=1), uncertainty

    def heads(self, summaries, first_layer=0):
        """Logits of layers first_layer, first_layer + 1, ... from their summary vectors (first
        token or mean), and their learned uncertainty ([batch, len(summaries)], or None). The
        shared pooler runs once on all of them (one matrix product, forward and backward, instead
        of one per layer, and one read of its weight)."""
        if len(summaries) == 1:  # as transformers' own class pools, to the bit: the summary as it is (a view
            pooled = self.head_input(self.pool(summaries[0]).unsqueeze(1))  # of the first token), not a copy
        else:
            pooled = self.head_input(self.pool(torch.stack(summaries, dim=1)))
        logits = [self.exit_head(first_layer + j)(pooled[:, j]) for j in range(len(summaries))]
        return logits, torch.sigmoid(self.lte(pooled)).squeeze(-1) if hasattr(self, "lte") else None


class ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale` (gradient equilibrium)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class SharedDenseHead:
    """For backbones whose sequence classifier is a `classifier` of dense, activation and out_proj
    (RoBERTa, ELECTRA): every layer's head reads the shared dense part, out_proj is the last layer's
    head and `classifiers.{i}` the heads below, so transformers' checkpoints load by name."""

    final_head_name = "classifier.out_proj"

    def init_classifier(self, config, classifier):
        self.classifier = classifier
        self.dropout = classifier.dropout
        self.init_pabee(config)
