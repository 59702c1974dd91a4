"""Where a checkpoint keeps the head of the last layer a model loads. This project saves it as
transformers' XForSequenceClassification names its classifier (the model's `final_head_name`), so
that transformers' own class finds it; the original PABEE code and transformers' research port name
the head of layer i + 1 `classifiers.{i}`, the last one included; and a checkpoint of more layers than
the model loads (`num_hidden_layers` set lower) keeps the head of the last loaded layer L at
`classifiers.{L-1}` in either layout. Every path that loads weights into a PABEE model asks here
(pabee.modeling.model.PabeeMixin's from_pretrained and load_state_dict), so no caller patches a head after
loading and no trained head is left random in silence."""

import contextlib
import json
import logging
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path

EXIT_HEADS = "classifiers."
# The weight files transformers looks for, in its order (sharded files through their index).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
DOWNLOAD_OPTIONS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


def layer_head(depth):
    """The prefix of the head of layer `depth` (1-based) in the original layout."""
    return f"{EXIT_HEADS}{depth - 1}."


def final_head_source(keys, depth, final_head_name):
    """The prefix under which the checkpoint with parameter names `keys` keeps the head of layer
    `depth`, the model's last: `classifiers.{depth-1}.` where it has one, else the final head's own
    name where it has that, else None (a plain backbone, or a part of a checkpoint)."""
    return next((prefix for prefix in (layer_head(depth), final_head_name + ".")
                 if any(k.startswith(prefix) for k in keys)), None)


def check_final_head(keys, depth, final_head_name):
    """A whole checkpoint with exit heads but no head for layer `depth` is refused: loading it would
    leave a trained head random."""
    if final_head_source(keys, depth, final_head_name) is None and any(k.startswith(EXIT_HEADS) for k in keys):
        raise ValueError(f"the checkpoint holds PABEE exit heads ({EXIT_HEADS}*) but no head for layer {depth}, the "
                         f"model's last: neither {final_head_name}.weight nor {layer_head(depth)}weight is in it; load "
                         "it with the number of layers it was trained with (num_hidden_layers) or give the complete "
                         "checkpoint")


def with_final_head(state_dict, depth, final_head_name):
    """`state_dict` with the head of layer `depth` under the final head's name (an original layout's
    `classifiers.{depth-1}.*` renamed; a deeper checkpoint's own final head left out)."""
    source = final_head_source(state_dict.keys(), depth, final_head_name)
    final = final_head_name + "."
    if source in (None, final):
        return state_dict
    renamed = OrderedDict((final + k[len(source):] if k.startswith(source) else k, v)
                          for k, v in state_dict.items() if not k.startswith(final))
    if hasattr(state_dict, "_metadata"):  # torch's per-module versions travel with a state dict
        renamed._metadata = state_dict._metadata
    return renamed


def read_tensors(path, names, options):
    """The tensors `names` of the checkpoint at `path` (a folder or a hub name), read from the weight
    file transformers loads (`options`: from_pretrained's download options, `variant`,
    `use_safetensors`); nothing is unpickled."""
    index = resolve(path, weight_files(options), options)
    shards = json.loads(Path(index).read_text())["weight_map"] if index.endswith(".json") else None
    by_file = {}
    for name in names:
        by_file.setdefault(resolve(path, [shards[name]], options) if shards else index, []).append(name)
    return {name: tensor for file, wanted in by_file.items() for name, tensor in read_from(file, wanted).items()}


def weight_files(options):
    variant, safetensors = options.get("variant"), options.get("use_safetensors")
    names = [with_variant(name, variant) if variant else name for name in WEIGHT_FILES]
    return [n for n in names if safetensors is not False or "safetensors" not in n]


def with_variant(name, variant):
    """A weight file's name for a variant, as transformers names it (model.safetensors.index.json ->
    model.safetensors.index.<variant>.json)."""
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def resolve(path, candidates, options):
    from transformers.utils import cached_file

    download = {k: options[k] for k in DOWNLOAD_OPTIONS if options.get(k) is not None}
    for name in candidates:
        found = cached_file(path, name, _raise_exceptions_for_missing_entries=False, **download)
        if found:
            return found
    raise OSError(f"no weight file ({', '.join(candidates)}) in {path}")


def read_from(file, names):
    import torch
    from safetensors import safe_open

    if file.endswith(".safetensors"):
        with safe_open(file, "pt") as saved:
            return {name: saved.get_tensor(name) for name in names}
    # torch before 1.6 (the original code's) wrote another format, which cannot be mapped
    state = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    return {name: state[name] for name in names}


def transformers_report():
    """The logger transformers says its load report on: what is said here about loading is that report."""
    from transformers.utils import logging as hf_logging

    return hf_logging.get_logger("transformers.modeling_utils")


class HeldLoadReport(contextlib.AbstractContextManager):
    """Holds back transformers' LOAD REPORT while a checkpoint loads; `release` says it as it was."""

    def __enter__(self):
        self.logger, self.records, self.thread = transformers_report(), [], threading.get_ident()
        self.logger.addFilter(self.hold)
        return self

    def hold(self, record):
        if "LOAD REPORT" not in record.getMessage() or record.thread != self.thread:  # another thread's load
            return True
        self.records.append(record)
        return False

    def __exit__(self, kind, error, trace):
        self.logger.removeFilter(self.hold)
        if kind is not None:  # transformers' error says "look at the above report"
            self.release()

    def release(self):
        for record in self.records:
            self.logger.handle(record)
        self.records = []


def log_taken_head(path, source, info):
    """transformers' load report where the last head came from `source`, in one line: a warning if
    anything else is still missing, unexpected or of another shape, as transformers' report would be,
    else information."""
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    mismatched = sorted(k for k, *_ in info.get("mismatched_keys", ()))
    level = logging.WARNING if missing or unexpected or mismatched else logging.INFO
    transformers_report().log(
        level, "LOAD REPORT from %s: the last layer's head read from %s*; %d parameters missing (initialised "
        "fresh%s), %d unexpected (ignored%s), %d of another shape (initialised fresh%s)", path, source, len(missing),
        listed(missing), len(unexpected), listed(unexpected), len(mismatched), listed(mismatched))


def listed(keys):
    return ": " + ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "") if keys else ""
