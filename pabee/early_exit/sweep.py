"""Exits read from the logits of every layer: one full-depth pass serves any number of exit
settings (the one-pass sweep), and the statistics of a set of exit layers."""

import torch


def exit_layers_from_logits(all_layer_logits, rule, all_layer_uncertainty=None):
    """The exit layer (1-based) each example would take under `rule`, read from logits of
    every layer (and, for learning to exit, every layer's uncertainty, [batch, layers]): one
    full-depth pass then serves any number of settings."""
    batch_size, num_layers = all_layer_logits.shape[:2]
    device = all_layer_logits.device
    exit_layers = torch.full((batch_size,), num_layers, dtype=torch.long, device=device)
    if not rule.exits_early:
        return exit_layers
    state = rule.start(batch_size, device)
    for i in range(num_layers - 1):
        uncertainty = None if all_layer_uncertainty is None else all_layer_uncertainty[:, i]
        state = rule.step(all_layer_logits[:, i], state, uncertainty)
        exits = (rule.waits(state) == 0) & (exit_layers == num_layers)
        exit_layers = torch.where(exits, i + 1, exit_layers)
    return exit_layers


def logits_at_exit(all_layer_logits, exit_layers):
    rows = torch.arange(all_layer_logits.shape[0], device=all_layer_logits.device)
    return all_layer_logits[rows, exit_layers - 1]


def answers_at_exit(all_layer_logits, exit_layers, rule):
    """What each example answers at its exit layer: that layer's logits, or what the rule answers
    from the layers so far (the past layers' average)."""
    return logits_at_exit(rule.layer_answers(all_layer_logits), exit_layers)


def exit_stats(exit_layers, num_layers):
    """Mean exit layer, the true speed-up L / mean, and the originals' "Speed Up" 1 - mean/L."""
    mean = float(torch.as_tensor(exit_layers, dtype=torch.float64).mean())
    return {
        "mean_exit_layer": mean,
        "speed_up": num_layers / mean,
        "original_speed_up": 1 - mean / num_layers,
    }


def exit_counts(exit_layers, num_layers):
    """How many examples exit at each layer, 1..L."""
    return torch.bincount(torch.as_tensor(exit_layers).long().flatten(), minlength=num_layers + 1)[1:].tolist()
