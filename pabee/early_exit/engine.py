"""The exit engine: how examples flow through the layers at inference, for every backbone and exit
rule. The model says how to embed, run layer i and feed a head; the rule says when a row may stop.

Two ways in. `exit_batch` answers one given batch (what `model(...)` does at inference): the batch
runs layer after layer, exited rows leave it, and the host waits for the device once per window of
layers in which no row can exit. `stream` answers a stream of examples (run_glue's evaluation,
predict.py): it keeps, for every length bucket and layer, the rows waiting to run that layer, runs
one layer at a time on a bucket of rows padded to a declared shape (`Shapes`), and lets new
examples into layer 1 as others exit, so that calls stay full instead of shrinking (the re-batching
of early-exit serving systems such as E3, SOSP 2024). Every call is logged (`Launch`); the rule's
state stays on the device, and the host reads one small tensor after a call (the rows' waits) only
when one of its rows could exit there.
"""

from dataclasses import dataclass

import numpy as np
import torch

from pabee.early_exit.batch_rows import LayerInputs, collate, select_rows
from pabee.early_exit.flow import Answered, Flow, Launch


# --- one given batch ----------------------------------------------------------------------------

def exit_batch(model, hidden, inputs, weights, rule):
    """(answers, exit layers) of one batch. Heads run only where they can matter: the rule says
    how many layers must pass before any active row could exit (patience p: p minus the highest
    agreement count); those layers run back to back, then their heads together update the rule.
    The host waits for the device once per such window, to learn which rows exit and how long the
    next window is; never when the rule cannot exit early."""
    num_layers = model.num_layers
    batch_size, device = hidden.shape[0], hidden.device
    rows = torch.arange(batch_size, device=device)
    exit_layers = torch.full((batch_size,), num_layers, dtype=torch.long, device=device)
    answers = None
    state = rule.start(batch_size, device)
    done = 0
    window = rule.earliest_exit if rule.exits_early else num_layers
    while done + window < num_layers:
        summaries = []
        for i in range(done, done + window):
            hidden = model.run_layer(i, hidden, inputs)
            summaries.append(model.summary(hidden, weights))
        state, logits = step_rule(rule, state, *model.heads(summaries, done))
        done += window
        waits = rule.waits(state).tolist()
        if answers is None:
            answers = logits.new_zeros(batch_size, logits.shape[-1])
        if 0 in waits:
            exits = torch.tensor([j for j, w in enumerate(waits) if w == 0], device=device)
            answers[rows[exits]] = rule.answer(logits, state)[exits].to(answers.dtype)
            exit_layers[rows[exits]] = done
            if len(exits) == len(waits):
                return answers, exit_layers
            keep = torch.tensor([j for j, w in enumerate(waits) if w > 0], device=device)
            rows, hidden, inputs, weights = rows[keep], hidden[keep], inputs.keep(keep), select_rows(weights, keep)
            state = tuple(s[keep] for s in state)
        window = min(w for w in waits if w > 0)
    for i in range(done, num_layers):
        hidden = model.run_layer(i, hidden, inputs)
    if rule.answers_from_state:  # its answer reads the last layer too
        state, logits = step_rule(rule, state, *model.heads([model.summary(hidden, weights)], num_layers - 1))
        logits = rule.answer(logits, state)
    else:
        logits = model.classify(num_layers - 1, hidden, weights)
    if answers is None:
        return logits, exit_layers
    answers[rows] = logits.to(answers.dtype)
    return answers, exit_layers


def step_rule(rule, state, logits, uncertainty):
    """The rule's state after the layers of one window, and the last of their logits."""
    for j, layer_logits in enumerate(logits):
        state = rule.step(layer_logits, state, None if uncertainty is None else uncertainty[:, j])
    return state, logits[-1]


# --- the shapes of a stream's layer calls --------------------------------------------------------

GPU_ROWS = (1, 8, 16, 32, 64, 96, 128, 192, 256)  # a GPU's layer time is nearly flat in rows
GPU_LENGTHS = (32, 64, 128, 256, 512)


def growing(first, factor, top):
    """first, then each about `factor` times the one before (rounded), up to top."""
    sizes = [first]
    while sizes[-1] < top:
        sizes.append(max(round(sizes[-1] * factor), sizes[-1] + 1))
    return tuple(sizes)


# On the CPU time grows with rows and tokens: rows are never padded, and lengths only within about
# 12% (neighbouring lengths share calls, as in length-sorted batches, with little padding).
CPU_LENGTHS = growing(8, 1.12, 4096)


@dataclass(frozen=True)
class Shapes:
    """The shapes layer calls take: a call of n rows runs padded to the smallest row bucket >= n,
    and an example of t tokens joins the smallest length bucket >= t. None: every size is its own
    bucket, nothing padded. A GPU wants few fixed shapes (what a graph replays; its time is nearly
    flat in rows), a CPU little padding. The batch size is the largest row bucket, max_length the
    largest length bucket."""

    batch_size: int
    max_length: int
    rows: tuple | None = None
    lengths: tuple | None = None

    @classmethod
    def of(cls, batch_size, max_length, rows="auto", lengths="auto", fixed=False):
        """rows and lengths: a tuple of sizes, None (exact) or "auto" (fixed: the GPU's buckets, as on
        CUDA or for a compiled step; else exact rows and CPU_LENGTHS); sizes above the batch size or
        max_length are dropped, those two added."""
        rows = (GPU_ROWS if fixed else None) if rows == "auto" else rows
        lengths = (GPU_LENGTHS if fixed else CPU_LENGTHS) if lengths == "auto" else lengths
        return cls(batch_size, max_length, capped(rows, batch_size), capped(lengths, max_length))

    def row_bucket(self, n):
        return n if self.rows is None else next(r for r in self.rows if r >= n)

    def length_bucket(self, t):
        return t if self.lengths is None else next((b for b in self.lengths if b >= t), t)

    @property
    def declared(self):
        """How many (rows, length) shapes a call may take."""
        return (len(self.rows) if self.rows else self.batch_size) * (len(self.lengths) if self.lengths else
                                                                     self.max_length)


def capped(sizes, top):
    return None if sizes is None else tuple(sorted({s for s in sizes if s < top} | {top}))


def layer_step(model, rule, layer, hidden, rows, shared, weights, state, with_heads):
    """The unit a stream repeats: layer `layer` (0-based) on a bucket of rows, its head, the rule's
    update. Returns (hidden, state, answers, waits); answers and waits are None without heads."""
    hidden = model.run_layer(layer, hidden, LayerInputs(rows, shared))
    if not with_heads:
        return hidden, state, None, None
    logits, uncertainty = model.heads([model.summary(hidden, weights)], layer)
    state = rule.step(logits[0], state, None if uncertainty is None else uncertainty[:, 0])
    return hidden, state, rule.answer(logits[0], state), rule.waits(state)


def stream(model, rule, chunks, shapes, pad_id, step=layer_step):
    """Answers the examples of `chunks` (lists of tokenized examples: input_ids, attention_mask,
    token_type_ids when the model reads them) and yields them as `Answered`, in input order, as
    soon as every earlier example is answered. A chunk shorter than the batch size (a pause in the
    input, or its end) runs every example in flight to its exit before the next chunk is read. A
    model that answers a whole batch under `rule` in one call (`one_call`: ONNX Runtime's patience
    graph at batch size 1, its full depth at any, pabee/deploy/patience_graph.py) answers each batch so: no
    row is freed to refill."""
    whole = getattr(model, "one_call", None)
    if whole is not None and (answer := whole(rule, shapes.batch_size)) is not None:
        yield from answered_whole(answer, chunks, shapes, pad_id)
        return
    flow = Flow(model, rule, shapes, pad_id, step)
    for chunk in chunks:
        flow.take_in(chunk)
        flow.run_full_calls()
        if len(chunk) < shapes.batch_size:
            flow.drain_all()
        if answered := flow.emit():
            yield answered
    flow.drain_all()
    if answered := flow.emit():
        yield answered


def served(model, rule, shapes, pad_id, arrivals, step=layer_step):
    """An open feed: examples join the stream while it runs and leave it as they exit, so that a row
    an exit frees is taken at the next call by whichever example waits. `arrivals(busy)` gives the
    tokenized examples that came since its last call (a list, maybe empty, at once while `busy`: rows
    are in flight; else it may wait for some), or None to end the feed once the rows in flight are
    answered. Yields Exited (pabee/early_exit/flow.py): the examples' positions in the feed (0, 1,
    ... as they came), answers and exit layers, in exit order."""
    flow = Flow(model, rule, shapes, pad_id, step, ordered=False)
    busy, open_ = False, True
    while open_ or busy:
        came = arrivals(busy) if open_ else []
        if came is None:
            open_ = False
        elif came:
            flow.take_in(came)
        busy = flow.advance()
        if exited := flow.exited():
            yield exited


def answered_whole(answer, chunks, shapes, pad_id):
    """Each batch of the batch size answered by calls of `answer` (rows padded to their longest, as
    numpy arrays -> numpy logits [rows, labels], exit layers [rows]), one call for the rows of each
    length bucket (an unsorted input pads little, as in the stream); the calls logged as the layers
    they ran."""
    for chunk in chunks:
        for start in range(0, len(chunk), shapes.batch_size):
            yield answered_batch(answer, chunk[start:start + shapes.batch_size], shapes, pad_id)


def answered_batch(answer, examples, shapes, pad_id):
    """The Answered of one batch. Plain Python and numpy but for the two tensors handed back: beside
    ONNX Runtime's work every call here meets cold caches (at batch 1 the host's few microseconds a
    step cost 0.1-0.2 ms an example)."""
    groups = [[0]] if len(examples) == 1 else list(by_length_bucket(examples, shapes).values())
    logits, exits, launches = [], [], []
    for rows in groups:
        batch = collate([examples[k] for k in rows], pad_id, array=int64_array)
        group_logits, group_exits = answer(batch)
        logits.append(group_logits)
        exits.append(group_exits)
        launches += launched(group_exits.tolist(), batch["input_ids"].shape[1])
    return Answered(torch.from_numpy(rejoined(logits, groups)), torch.from_numpy(rejoined(exits, groups)), launches)


def by_length_bucket(examples, shapes):
    """bucket -> the indices of the examples whose length falls in it."""
    groups = {}
    for k, example in enumerate(examples):
        groups.setdefault(shapes.length_bucket(len(example["input_ids"])), []).append(k)
    return groups


def launched(exits, tokens):
    """The layer calls of one call answering rows that left at the layers `exits`, padded to `tokens`."""
    return [Launch(layer, sum(e >= layer for e in exits), len(exits), tokens, False) for layer in range(1, max(exits) + 1)]


def rejoined(parts, groups):
    """The groups' answers (`parts`, one array a group of `groups`: lists of rows) in input order."""
    if len(parts) == 1:  # at batch 1 always
        return parts[0]
    return np.concatenate(parts)[np.argsort(np.concatenate(groups))]


def int64_array(values):
    return np.array(values, dtype=np.int64)
