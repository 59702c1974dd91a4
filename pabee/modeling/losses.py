"""The losses of training: PABEE's weighted loss over every head, the losses of the baselines'
stages (vanilla's last head, DeeBERT's internal heads, FastBERT's self-distillation), and of the
later methods (BERxiT's alternating objectives and its learning-to-exit head, ElasticBERT's sum
over every head, COSEE's sample-weighted loss: pabee.modeling.cosee). One loss serves every backbone: they read the stacked logits of every layer,
[batch, layers, labels] (and, to learn to exit, every layer's uncertainty, [batch, layers])."""

import torch
from torch.nn import functional as F

from pabee.modeling.cosee import CoseeBatch, cosee_loss


def batch_regime(stage_regime, batch_number):
    """The loss of one batch of a stage. BERxiT alternates objectives batch by batch (as its
    released code counts the batches of an epoch): even batches train the last head, odd ones every
    head (`alternate`), or with the learning-to-exit loss added to both, the internal heads alone on
    odd batches (`alternate_lte`). Every other stage has one loss."""
    if stage_regime == "alternate":
        return "last" if batch_number % 2 == 0 else "all"
    if stage_regime == "alternate_lte":
        return "last_lte" if batch_number % 2 == 0 else "internal_lte"
    return stage_regime


def training_loss(all_layer_logits, labels, regime="pabee", temperature=1.0, uncertainty=None):
    """The loss of one batch (see batch_regime). `pabee`: the paper's weighted loss. `last`: the
    last head's loss alone (vanilla), so the internal heads get no gradient. `internal`: the sum of
    the internal heads' own losses (DeeBERT's second stage). `distill`: the sum over internal heads
    of the KL divergence from the last layer's softmax at `temperature`, times temperature squared
    (regression: MSE to the last layer's value; FastBERT's self-distillation); in both second
    stages the last layer is the fixed target. `all` and `equilibrium`: the sum of every head's
    loss (BERxiT's odd batches; ElasticBERT, whose gradient equilibrium acts in the forward pass).
    `last_lte` / `internal_lte`: the last head's loss / the internal heads' summed, plus the
    learning-to-exit loss (lte_loss). A CoseeBatch: COSEE's loss (pabee.modeling.cosee), which needs the
    batch's thresholds and sharpness from the training loop."""
    if isinstance(regime, CoseeBatch):
        return cosee_loss(all_layer_logits, labels, regime)
    if regime == "cosee":
        raise ValueError("COSEE's loss needs its batch's thresholds: pass a pabee.modeling.cosee.CoseeBatch as the regime")
    internal = all_layer_logits[:, :-1].unbind(1)
    if regime == "last":
        return layer_loss(all_layer_logits[:, -1], labels)
    if regime == "internal":
        return sum(layer_loss(logits, labels) for logits in internal)
    if regime == "distill":
        teacher = all_layer_logits[:, -1].detach()
        return sum(distill_loss(logits, teacher, temperature) for logits in internal)
    if regime in ("all", "equilibrium"):
        return sum(layer_loss(logits, labels) for logits in all_layer_logits.unbind(1))
    if regime == "last_lte":
        return layer_loss(all_layer_logits[:, -1], labels) + lte_loss(all_layer_logits, labels, uncertainty)
    if regime == "internal_lte":
        return sum(layer_loss(logits, labels) for logits in internal) + lte_loss(all_layer_logits, labels, uncertainty)
    return pabee_loss(all_layer_logits, labels)


def lte_loss(all_layer_logits, labels, uncertainty):
    """BERxiT's learning-to-exit loss: the mean squared error between each layer's predicted
    uncertainty and what its answer deserved: 1 when the layer's class is wrong, 0 when right;
    for regression |tanh(prediction - label)| (as the released code computes it)."""
    with torch.no_grad():
        if all_layer_logits.shape[-1] == 1:
            target = torch.tanh(all_layer_logits[..., 0] - labels.view(-1, 1).to(all_layer_logits.dtype)).abs()
        else:
            target = (all_layer_logits.argmax(-1) != labels.view(-1, 1)).to(uncertainty.dtype)
    return F.mse_loss(uncertainty, target.to(uncertainty.dtype))


def distill_loss(student, teacher, temperature):
    if student.shape[-1] == 1:
        return F.mse_loss(student.view(-1), teacher.view(-1))
    return F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    log_target=True, reduction="batchmean") * temperature ** 2


def pabee_loss(all_layer_logits, labels):
    """sum_i i * loss_i / sum_i i over layers i = 1..L; MSE on view(-1) when num_labels == 1."""
    weights = torch.arange(1, all_layer_logits.shape[1] + 1, device=all_layer_logits.device)
    losses = torch.stack([layer_loss(logits, labels) for logits in all_layer_logits.unbind(1)])
    return (weights * losses).sum() / weights.sum()


def layer_loss(logits, labels):
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.view(-1), labels.view(-1).to(logits.dtype))
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
