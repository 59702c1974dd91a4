"""Values that travel with the rows of a batch (hidden states, masks, rotary tables, rule state):
batch first, or a tuple of such, or None. The exit loop selects the rows that stay; the exit
engine also joins rows from several groups into one call and pads a call to its bucket; `collate`
pads tokenized examples into a batch."""

from dataclasses import dataclass, field

import torch


def select_rows(x, rows):
    """The batch rows `rows` (an index tensor) of a tensor, or of each tensor in a tuple (None
    stays None: the attention mask when nothing is padded, a rule's state before layer 1)."""
    if isinstance(x, tuple):
        return tuple(select_rows(t, rows) for t in x)
    return None if x is None else x.index_select(0, rows)


def first_rows(x, n):
    """The first n rows (a view)."""
    if isinstance(x, tuple):
        return tuple(first_rows(t, n) for t in x)
    return None if x is None else x[:n]


def join_rows(parts):
    """The rows of several values of the same kind, one after the other."""
    if isinstance(parts[0], tuple):
        return tuple(join_rows(list(p)) for p in zip(*parts, strict=True))
    if parts[0] is None:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def pad_rows(x, n):
    """Rows up to n, the added ones copies of the first: padded rows compute what a real row
    computes (no empty attention, no NaN) and are dropped after the call."""
    if isinstance(x, tuple):
        return tuple(pad_rows(t, n) for t in x)
    if x is None or x.shape[0] == n:
        return x
    return torch.cat([x, x[:1].expand(n - x.shape[0], *x.shape[1:])])


@dataclass
class LayerInputs:
    """What the layers read besides the hidden states, built once per batch. `rows` are batch
    first (attention masks, rotary tables) and lose the rows of exited examples together with the
    hidden states; `shared` hold the same for every example of one length (relative-position
    tables)."""

    rows: dict
    shared: dict = field(default_factory=dict)

    def __getitem__(self, name):
        return self.rows[name] if name in self.rows else self.shared[name]

    def keep(self, index):
        return LayerInputs({k: select_rows(v, index) for k, v in self.rows.items()}, self.shared)


def collate(features, pad_id, length=None, array=torch.tensor):
    """Pads a batch to its longest sequence, or to `length` tokens, as tensors: the token columns as
    `array` makes them of nested lists (numpy's int64 arrays where no torch op should run), labels as
    they are."""
    longest = length or max(len(f["input_ids"]) for f in features)

    def padded(key, value):
        return array([f[key] + [value] * (longest - len(f[key])) for f in features])

    batch = {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0)}
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = padded("token_type_ids", 0)
    if "label" in features[0]:
        batch["labels"] = torch.tensor([f["label"] for f in features])
    return batch
