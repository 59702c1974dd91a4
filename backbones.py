"""The backbones PABEE runs on, one line each. `--model_type`'s choices, model and tokenizer
loading, the tests' backbone list and the README's table all read this table. A backbone is an
adapter file (modeling_pabee_<name>.py: how it embeds, runs layer i and pools) plus one line here.

Model and tokenizer classes are imported on first use, transformers with them."""

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from runtime import UsageError, first_line


@dataclass(frozen=True)
class Backbone:
    name: str  # the --model_type value and the config's model_type
    adapter: str  # module holding the PABEE model class
    model_class: str
    tokenizer_class: str  # in transformers
    default_checkpoint: str  # what the classic scripts fine-tune
    tokenizer_files: tuple  # a folder without any of these holds no tokenizer

    def load_model_class(self):
        return getattr(importlib.import_module(self.adapter), self.model_class)

    def load_tokenizer_class(self):
        return getattr(importlib.import_module("transformers"), self.tokenizer_class)


BACKBONES = {
    b.name: b
    for b in [
        Backbone("bert", "modeling_pabee_bert", "BertForSequenceClassificationWithPabee", "BertTokenizer",
                 "bert-base-uncased", ("tokenizer.json", "tokenizer_config.json", "vocab.txt")),
        Backbone("albert", "modeling_pabee_albert", "AlbertForSequenceClassificationWithPabee", "AlbertTokenizer",
                 "albert-base-v2", ("tokenizer.json", "tokenizer_config.json", "spiece.model")),
    ]
}


def check_model_reference(name, flag):
    """A local folder must exist; anything else must at least look like a hub name."""
    if not name or Path(name).is_dir():
        return
    if Path(name).exists() or name.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise UsageError(f"--{flag} {name} is not a model folder: give an existing folder or a hub name")


def load_config(backbone, name, cache_dir=None, **overrides):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, cache_dir=cache_dir, **overrides)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a model config from {name} ({first_line(e)}): check --model_name_or_path") from None
    if config.model_type != backbone.name:
        raise UsageError(
            f"{name} holds a '{config.model_type}' model but --model_type is {backbone.name}: "
            f"pass --model_type {config.model_type} or another model"
        )
    return config


def load_model(backbone, path, task, device, config_name="", cache_dir=None):
    """The PABEE model for `task` from a plain backbone, a fine-tuned model or a checkpoint."""
    config = load_config(backbone, config_name or path, cache_dir, num_labels=task.num_labels,
                         finetuning_task=task.name)
    try:
        model = backbone.load_model_class().from_pretrained(path, config=config, cache_dir=cache_dir)
    except Exception as e:  # missing, truncated or foreign weights: the loaders raise many kinds
        raise UsageError(f"cannot load model weights from {path} ({first_line(e)}): check the folder or hub name") from None
    return model.to(device)


def load_tokenizer(backbone, name, do_lower_case=False, cache_dir=None):
    if Path(name).is_dir() and not any((Path(name) / f).is_file() for f in backbone.tokenizer_files):
        # transformers would build an empty-vocabulary tokenizer here, and every word would be [UNK]
        raise UsageError(f"no tokenizer files in {name} ({', '.join(backbone.tokenizer_files)}): pass --tokenizer_name")
    extra = {"do_lower_case": True} if do_lower_case else {}
    try:
        return backbone.load_tokenizer_class().from_pretrained(name, cache_dir=cache_dir, **extra)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a tokenizer from {name} ({first_line(e)}): pass --tokenizer_name") from None
