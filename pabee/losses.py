"""The losses of training: PABEE's weighted loss over every head, and the losses of the baselines'
stages (vanilla's last head, DeeBERT's internal heads, FastBERT's self-distillation). One loss
serves every backbone: they read the stacked logits of every layer, [batch, layers, labels]."""

import torch
from torch.nn import functional as F


def training_loss(all_layer_logits, labels, regime="pabee", temperature=1.0):
    """The loss of one training stage (options.STAGES). `pabee`: the paper's weighted loss.
    `last`: the last head's loss alone (vanilla), so the internal heads get no gradient.
    `internal`: the sum of the internal heads' own losses (DeeBERT's second stage). `distill`:
    the sum over internal heads of the KL divergence from the last layer's softmax at
    `temperature`, times temperature squared (regression: MSE to the last layer's value;
    FastBERT's self-distillation). In both second stages the last layer is the fixed target."""
    if regime == "last":
        return layer_loss(all_layer_logits[:, -1], labels)
    if regime == "internal":
        return sum(layer_loss(logits, labels) for logits in all_layer_logits[:, :-1].unbind(1))
    if regime == "distill":
        teacher = all_layer_logits[:, -1].detach()
        return sum(distill_loss(logits, teacher, temperature) for logits in all_layer_logits[:, :-1].unbind(1))
    return pabee_loss(all_layer_logits, labels)


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
