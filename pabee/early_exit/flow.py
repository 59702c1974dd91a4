"""A stream's rows in flight through the exit engine (pabee/early_exit/engine.py): examples waiting to be
embedded, the groups of rows waiting for each layer, the calls that move them, and the answers
given back in input order (or, for an open feed, as rows exit). Rows of one call share a length
bucket; a call runs padded to its row bucket; the host reads after a call only when one of its rows
could exit there."""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pabee.early_exit.batch_rows import collate, first_rows, join_rows, pad_rows, select_rows


JOIN = 1.12  # an example may run padded to an active length bucket up to this many times its tokens


class Launch(NamedTuple):
    """One layer call of a stream."""

    layer: int  # 1-based
    rows: int  # real rows
    padded: int  # rows the call ran: its row bucket
    length: int  # its length bucket, in tokens
    read: bool  # whether the host read the rows' waits after it
    stalled: bool = False  # the host waited for that read with no later call issued: a GPU would idle


class Answered(NamedTuple):
    """The next examples of a stream, in input order: what each answers (float32, on the CPU), its
    exit layer, and the layer calls made since the last Answered."""

    logits: torch.Tensor
    exit_layers: torch.Tensor
    launches: list


@dataclass
class Group:
    """Rows of one length bucket waiting for the same layer, with everything that travels with
    them; `earliest` is, per row, the first layer (1-based) at which it could exit, as last read."""

    ids: np.ndarray  # positions in the stream
    hidden: torch.Tensor
    rows: dict  # the per-row layer inputs (LayerInputs.rows)
    weights: torch.Tensor | None
    state: tuple
    earliest: np.ndarray

    def split(self, n):
        """(the first n rows, the rest)."""
        return self.part(slice(0, n)), self.part(slice(n, None))

    def part(self, select):
        return Group(self.ids[select], self.hidden[select], {k: cut(v, select) for k, v in self.rows.items()},
                     cut(self.weights, select), cut(self.state, select), self.earliest[select])


class Unread(NamedTuple):
    """A call's rows whose waits are on their way to the host."""

    launch: int  # the call's position among the stream's calls
    length: int
    layer: int  # the 0-based layer it ran
    group: Group  # its rows after the layer
    answers: torch.Tensor
    waits: torch.Tensor  # on the device
    copy: object  # what start_read returned


def cut(x, select):
    if isinstance(x, tuple):
        return tuple(cut(t, select) for t in x)
    return None if x is None else x[select]


def joined(groups):
    if len(groups) == 1:
        return groups[0]
    return Group(np.concatenate([g.ids for g in groups]), join_rows([g.hidden for g in groups]),
                 {k: join_rows([g.rows[k] for g in groups]) for k in groups[0].rows},
                 join_rows([g.weights for g in groups]), join_rows([g.state for g in groups]),
                 np.concatenate([g.earliest for g in groups]))


class Exited(NamedTuple):
    """Examples of an open feed that left the stream, in the order they exited: their positions in
    the feed (0, 1, ... as they came in), answers (float32, on the CPU), exit layers, and the layer
    calls made since the last Exited."""

    ids: np.ndarray
    logits: torch.Tensor
    exit_layers: np.ndarray
    launches: list


class Flow:
    """A stream's rows in flight: examples not yet embedded (`intake`, per length bucket), the
    groups waiting for each layer (`queues`, per length bucket and 0-based layer), calls whose
    waits are on their way to the host (`unread`), and the answers not yet given back. At most
    (layers + 1) x batch size rows are held: past that the length bucket holding the oldest
    example runs to its end. `ordered`: answers are given back in input order (`emit`); an open feed
    takes them as rows exit (`exited`) and keeps no record of the examples answered."""

    def __init__(self, model, rule, shapes, pad_id, step, ordered=True):
        self.model, self.rule, self.shapes, self.pad_id, self.step = model, rule, shapes, pad_id, step
        self.layers, self.device = model.num_layers, model.device
        self.intake, self.queues, self.shared = {}, {}, {}
        self.done, self.launches, self.seen, self.given = [], [], 0, 0
        self.unread, self.issued, self.base = [], 0, 0  # calls issued, and before the unemitted launches
        self.finished, self.ordered = np.zeros(0, dtype=bool), ordered
        self.limit = (self.layers + 1) * shapes.batch_size
        self.heads = rule.heads_before_last(self.layers)  # else only the last layer runs its head

    def take_in(self, chunk):
        active = set(self.intake) | {length for length, _ in self.queues} | {u.length for u in self.unread}
        for example in chunk:
            length = self.bucket_of(len(example["input_ids"]), active)
            active.add(length)
            self.intake.setdefault(length, []).append((self.seen, example))
            self.seen += 1
        if self.ordered:
            self.finished = np.concatenate([self.finished, np.zeros(len(chunk), dtype=bool)])

    def bucket_of(self, tokens, active):
        """The length bucket an example of `tokens` joins: the smallest of the `active` ones (holding
        rows now) that pads it by at most JOIN, so that a thinning stream (a chunk, the end of the
        input) still makes few large calls, as a length-sorted batch padded to its longest would;
        else its own."""
        own = self.shapes.length_bucket(tokens)
        return min((b for b in active if own <= b <= tokens * JOIN), default=own)

    def run_full_calls(self):
        """Runs full calls while there are any (the deepest layer first, so rows leave before new
        ones come in). A read is taken in once another call was issued after it, so that a GPU has
        work while the host waits: when nothing else can run, it waits for the next chunk's calls
        (or the drain). New examples come in when no full call is waiting. Then keeps the rows held
        within the limit."""
        size = self.shapes.batch_size
        while True:
            full = [(layer, length) for (length, layer), q in self.queues.items() if sum(len(g.ids) for g in q) >= size]
            if full:
                layer, length = max(full)
                self.run_call(length, layer)
            elif self.unread and self.unread[0].launch < self.issued - 1:
                self.settle(self.unread[0])
            elif ready := [length for length, waiting in self.intake.items() if len(waiting) >= size]:
                self.admit(min(ready, key=self.oldest))
            else:
                break
        while self.held() > self.limit:
            self.drain(min(set(self.intake) | {length for length, _ in self.queues}, key=self.oldest))

    def advance(self):
        """One step of an open feed's work, whatever waits (no row is held back for a fuller call while
        nothing else could run): a full call (the deepest first), else a read taken in, else the
        oldest bucket's examples embedded, else the deepest layer's call on the rows waiting for it.
        False when no row is in flight."""
        full = [(layer, length) for (length, layer), q in self.queues.items()
                if sum(len(g.ids) for g in q) >= self.shapes.batch_size]
        if full:
            layer, length = max(full)
            self.run_call(length, layer)
        elif self.unread:
            self.settle(self.unread[0])
        elif self.intake:
            self.admit(min(self.intake, key=self.oldest))
        elif self.queues:
            length, layer = max(self.queues, key=lambda key: (key[1], -self.oldest(key[0])))
            self.run_call(length, layer)
        else:
            return False
        return True

    def exited(self):
        """The rows answered since the last call, as Exited (in exit order), or None."""
        if not self.done:
            return None
        ids, answers, layers = self.answered()
        self.done = []
        return Exited(ids, answers, layers, self.settled_launches())

    def answered(self):
        """(positions, answers on the CPU, exit layers) of the rows answered and not yet given back."""
        return (np.concatenate([ids for ids, _, _ in self.done]), torch.cat([a.float().cpu() for _, a, _ in self.done]),
                np.concatenate([layers for _, _, layers in self.done]))

    def settled_launches(self):
        """The calls made since the last taken whose reads are in (a later one may yet stall)."""
        settled = min((u.launch for u in self.unread), default=self.issued) - self.base
        launches, self.launches, self.base = self.launches[:settled], self.launches[settled:], self.base + settled
        return launches

    def held(self):
        return (sum(map(len, self.intake.values())) + sum(len(g.ids) for q in self.queues.values() for g in q)
                + sum(len(u.group.ids) for u in self.unread))

    def oldest(self, length):
        waiting = [self.intake[length][0][0]] if length in self.intake else []
        groups = [g for (b, _), q in self.queues.items() if b == length for g in q]
        return min(waiting + [int(g.ids.min()) for g in groups + [u.group for u in self.unread if u.length == length]])

    def drain_all(self):
        buckets = set(self.intake) | {length for length, _ in self.queues} | {u.length for u in self.unread}
        for length in sorted(buckets, key=self.oldest):
            self.drain(length)

    def drain(self, length):
        """Runs every row of one length bucket to its exit, shallowest layer first, so that rows
        join those already waiting deeper."""
        while length in self.intake:
            self.admit(length)
        while True:
            waiting = [layer for b, layer in self.queues if b == length]
            unread = [u for u in self.unread if u.length == length]
            if unread and (not waiting or unread[0].layer < min(waiting)):
                self.settle(unread[0])
            elif waiting:
                self.run_call(length, min(waiting))
            else:
                return

    def admit(self, length):
        """Embeds up to a batch of the bucket's examples, oldest first, into the queue of layer 1."""
        waiting = self.intake.pop(length)
        taken, rest = waiting[:self.shapes.batch_size], waiting[self.shapes.batch_size:]
        if rest:
            self.intake[length] = rest
        batch = {k: v.to(self.device, non_blocking=True)
                 for k, v in collate([example for _, example in taken], self.pad_id, length).items()}
        model, n = self.model, len(taken)
        hidden = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), None, None)
        inputs = model.layer_inputs(hidden, batch["attention_mask"], None)
        self.shared.setdefault(length, inputs.shared)
        earliest = self.rule.earliest_exit if self.heads else self.layers
        self.enqueue(length, 0, Group(np.array([i for i, _ in taken]), hidden, inputs.rows,
                                      model.token_weights(batch["attention_mask"], hidden),
                                      self.rule.start(n, self.device), np.full(n, earliest)))

    def enqueue(self, length, layer, group):
        self.queues.setdefault((length, layer), []).append(group)

    def take(self, length, layer):
        """Up to a batch of the rows waiting for `layer`, oldest first."""
        queue, taken, count = self.queues.pop((length, layer)), [], 0
        while queue and count < self.shapes.batch_size:
            group = queue.pop(0)
            if count + len(group.ids) > self.shapes.batch_size:
                group, rest = group.split(self.shapes.batch_size - count)
                queue.insert(0, rest)
            taken.append(group)
            count += len(group.ids)
        if queue:
            self.queues[length, layer] = queue
        return joined(taken)

    def run_call(self, length, layer):
        """One layer on up to a batch of the rows waiting for it, padded to its row bucket. The
        host reads the rows' waits only when one of them could exit here (the read starts now and
        is taken in by `settle`); the last layer answers every row."""
        group, last = self.take(length, layer), layer == self.layers - 1
        n = len(group.ids)
        padded = self.shapes.row_bucket(n)
        hidden, state, answers, waits = self.step(
            self.model, self.rule, layer, pad_rows(group.hidden, padded),
            {k: pad_rows(v, padded) for k, v in group.rows.items()}, self.shared[length],
            pad_rows(group.weights, padded), pad_rows(group.state, padded), self.heads or last)
        read = not last and self.heads and int(group.earliest.min()) <= layer + 1
        self.launches.append(Launch(layer + 1, n, padded, length, read))
        self.issued += 1
        hidden, state = first_rows(hidden, n), first_rows(state, n)
        if last:
            return self.finish(group.ids, answers[:n], layer + 1)
        moving = Group(group.ids, hidden, group.rows, group.weights, state, group.earliest)
        if not read:
            return self.enqueue(length, layer + 1, moving)
        self.unread.append(Unread(self.issued - 1, length, layer, moving, answers[:n], waits[:n], start_read(waits[:n])))

    def settle(self, unread):
        """Takes in a call's read: its exited rows finish, the others wait for the next layer."""
        self.unread.remove(unread)
        if unread.launch == self.issued - 1:  # nothing was issued since: the host waits, a GPU idles
            at = unread.launch - self.base
            self.launches[at] = self.launches[at]._replace(stalled=True)
        group, layer, waits = unread.group, unread.layer, finish_read(unread.copy)
        leaving = waits == 0
        if leaving.all():
            return self.finish(group.ids, unread.answers, layer + 1)
        group.earliest = layer + 1 + waits
        if leaving.any():  # the staying rows first, in the same order on the device and the host
            on_device = torch.argsort((unread.waits == 0).to(torch.int8), stable=True)
            stay = int((~leaving).sum())
            order = np.argsort(leaving, kind="stable")
            self.finish(group.ids[order[stay:]], unread.answers.index_select(0, on_device[stay:]), layer + 1)
            group = moving_rows(group, order[:stay], on_device[:stay])
        self.enqueue(unread.length, layer + 1, group)

    def finish(self, ids, answers, layer):
        self.done.append((ids, answers, np.full(len(ids), layer)))
        if self.ordered:
            self.finished[ids] = True

    def emit(self):
        """The answers of the examples from the first not given back up to the first not yet
        answered, in input order, with the calls made since the last; None when there are none.
        One read of the device: the answers themselves."""
        if not self.done:
            return None
        unanswered = np.flatnonzero(~self.finished[self.given:])
        frontier = self.given + (int(unanswered[0]) if len(unanswered) else len(self.finished) - self.given)
        if frontier == self.given:
            return None
        ids, answers, layers = self.answered()
        order = np.argsort(ids, kind="stable")
        out = order[:frontier - self.given]
        rest = order[frontier - self.given:]
        self.done = [(ids[rest], answers[torch.from_numpy(rest)], layers[rest])] if len(rest) else []
        self.given = frontier
        return Answered(answers[torch.from_numpy(out)], torch.from_numpy(layers[out]), self.settled_launches())


def moving_rows(group, host_order, device_order):
    """The rows of `group` that go on: host_order indexes its host arrays, device_order (the same
    rows) its tensors."""
    return Group(group.ids[host_order], group.hidden.index_select(0, device_order),
                 {k: select_rows(v, device_order) for k, v in group.rows.items()},
                 select_rows(group.weights, device_order), select_rows(group.state, device_order),
                 group.earliest[host_order])


def start_read(tensor):
    """Starts the one read of a layer call: on CUDA a copy into pinned memory that does not block,
    and an event that says when it is there."""
    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def finish_read(copy):
    """The values of a read started by start_read, on the host (waiting for them on CUDA)."""
    if isinstance(copy, torch.Tensor):
        return copy.numpy()
    host, event = copy
    event.synchronize()
    return host.numpy()
