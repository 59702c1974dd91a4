"""COSEE's training (He et al., "COSEE: Consistency-Oriented Signal-Based Early Exiting via
Calibrated Sample Weighting Mechanism", AAAI 2025, arXiv:2412.13236), as its authors' code
(github.com/He-Jianing/COSEE: MultiExitPLM/sample_weights_scheduler.py, examples/train.py)
computes it. Its exit rule is early_exit.rules.EnergyRule, whose signal this module reads too.

Each head learns most from the examples that would exit at or near it. Per batch, K thresholds
are drawn at random from the signal's range; under each, every example gets the layer it would
exit at (the first internal head whose normalized energy is below the threshold, else the last),
and the loss of head j on that example is weighted by softmax_j(-beta_t |exit layer - j|), with
beta_t growing linearly from 0 to beta over training (uniform weights at first, then sharper).
The classification loss is the mean over thresholds of sum_j sum_examples weight * cross-entropy,
divided by the batch size. To it is added alpha times the online signal calibration loss (OSC):
for each internal head whose answers in the batch are partly right and partly wrong, the hinge
max(0, mean signal of the right ones - mean signal of the wrong ones + margin), averaged over
those heads. The thresholds are drawn from [0, 1] in the first epoch and from the range of the
internal heads' signals over the previous epoch's batches afterwards (its code's update_signal_range).
Classification only: the energy score reads class logits.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pabee.early_exit.rules import normalized_energy

# The authors' scripts/train.sh: BETA, NUM_THRESHOLDS, ALPHA, R_EPSON.
SHARPNESS = 10.0  # beta: the weights' sharpness at the end of training
THRESHOLDS = 5  # K: thresholds drawn per batch
OSC_WEIGHT = 0.1  # alpha
OSC_MARGIN = 0.3  # epsilon


@dataclass(frozen=True)
class CoseeBatch:
    """What COSEE's loss of one batch needs beside the logits: the weights' sharpness beta_t and
    the thresholds drawn for the batch (plain floats, so DataParallel copies them to every GPU)."""

    sharpness: float
    thresholds: tuple


def sample_weights(num_layers, sharpness, device=None):
    """[exit layer, head] weights: row e is softmax over heads j of -sharpness * |e - j|."""
    layers = torch.arange(num_layers, device=device, dtype=torch.float32)
    return (-sharpness * (layers[:, None] - layers[None, :]).abs()).softmax(-1)


def exit_layers_under(signals, thresholds):
    """[thresholds, batch] 0-based exit layers: the first internal head whose signal is below the
    threshold, else the last layer. `signals`: [batch, internal heads]."""
    below = signals.unsqueeze(0) < thresholds.view(-1, 1, 1)
    always = torch.ones_like(below[..., :1])
    return torch.cat([below, always], -1).to(torch.uint8).argmax(-1)  # argmax: the first of equal maxima


def head_weight_shares(signals, low, high, sharpness, points=1000):
    """Each head's share of the classification loss's weight over examples with these internal
    signals [examples, heads - 1], thresholds spread evenly over [low, high] (the range they are
    drawn from) at sharpness beta: which heads the examples teach. Midpoints of `points` equal
    steps, so a threshold never equals a signal on a grid of thousandths."""
    thresholds = low + (high - low) * (torch.arange(points, dtype=torch.float64) + 0.5) / points
    exits = exit_layers_under(signals.double(), thresholds)
    return sample_weights(signals.shape[1] + 1, sharpness, signals.device)[exits].mean((0, 1))


def osc_loss(internal_logits, signals, labels, margin=OSC_MARGIN):
    """The online signal calibration loss over internal heads [batch, heads, labels] and their
    signals [batch, heads]: right answers should carry a lower signal than wrong ones by `margin`.
    0 when no head has both right and wrong answers in the batch."""
    right = internal_logits.argmax(-1) == labels.view(-1, 1)
    n_right, n_wrong = right.sum(0), (~right).sum(0)
    mean_right = (signals * right).sum(0) / n_right.clamp(min=1)
    mean_wrong = (signals * ~right).sum(0) / n_wrong.clamp(min=1)
    both = (n_right > 0) & (n_wrong > 0)
    return ((mean_right - mean_wrong + margin).clamp(min=0) * both).sum() / both.sum().clamp(min=1)


def cosee_loss(all_layer_logits, labels, batch):
    """COSEE's loss of one batch: all_layer_logits [batch, layers, labels], `batch` a CoseeBatch."""
    logits = all_layer_logits.float()
    size, num_layers, num_labels = logits.shape
    signals = normalized_energy(logits[:, :-1])
    thresholds = torch.tensor(batch.thresholds, device=logits.device)
    exits = exit_layers_under(signals.detach(), thresholds)
    weights = sample_weights(num_layers, batch.sharpness, logits.device)[exits].mean(0)  # [batch, layers]
    losses = F.cross_entropy(logits.reshape(-1, num_labels), labels.view(-1, 1).expand(size, num_layers).reshape(-1),
                             reduction="none").view(size, num_layers)
    return (weights * losses).sum() / size + OSC_WEIGHT * osc_loss(logits[:, :-1], signals, labels)


class CoseeSchedule:
    """What COSEE's training carries from batch to batch: the range this epoch's thresholds are
    drawn from, and the range of the internal heads' signals seen so far this epoch (device
    tensors, read by the host once an epoch). `state()` goes into checkpoints, so a resumed run
    draws as an uninterrupted one."""

    def __init__(self, low=0.0, high=1.0, seen=None):
        self.low, self.high, self.seen = low, high, seen

    def batch(self, number, progress):
        """The CoseeBatch of batch `number` of its epoch at `progress` (the share of the stage's
        steps done). An epoch's first batch moves the range to what the previous epoch's signals
        covered; the thresholds come from torch's generator, whose state checkpoints keep."""
        if number == 0:
            self.next_epoch()
        draws = self.low + (self.high - self.low) * torch.rand(THRESHOLDS, dtype=torch.float64)
        return CoseeBatch(SHARPNESS * progress, tuple(draws.tolist()))

    def observe(self, all_layer_logits):
        signals = normalized_energy(all_layer_logits[:, :-1].detach())
        low, high = signals.min(), signals.max()
        if self.seen is not None:  # a resumed run's range comes back on the CPU
            low, high = torch.minimum(self.seen[0].to(low.device), low), torch.maximum(self.seen[1].to(high.device), high)
        self.seen = low, high

    def next_epoch(self):
        if self.seen is not None:
            self.low, self.high, self.seen = float(self.seen[0]), float(self.seen[1]), None

    def state(self):
        return {"low": self.low, "high": self.high, "seen": None if self.seen is None else [float(v) for v in self.seen]}

    @classmethod
    def from_state(cls, state):
        if state is None:
            return cls()
        seen = state["seen"] and tuple(torch.tensor(v, dtype=torch.float32) for v in state["seen"])
        return cls(state["low"], state["high"], seen)
