"""The backbones PABEE runs on, one line each. `--model_type`'s choices, model and tokenizer
loading, the tests' backbone list and docs/backbones.md's table all read this table. A backbone is an
adapter module (pabee/modeling/adapters/<name>.py: how it embeds, runs layer i and pools) plus one line here.

Model and tokenizer classes are imported on first use, transformers with them."""

import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pabee.base.errors import UsageError, first_line
from pabee.base.file_io import describe_missing, read_json
from pabee.base.hub_access import hub_unavailable

logger = logging.getLogger(__name__)

EARLY_EXIT = "pabee-"  # the model_type prefix of folders transformers' own class cannot answer for


@dataclass(frozen=True)
class Backbone:
    name: str  # the --model_type value and the config's model_type
    adapter: str  # module holding the PABEE model class
    model_class: str
    tokenizer_class: str  # in transformers
    default_checkpoint: str  # what the classic scripts and docs name
    tokenizer_files: tuple  # a folder without any of these holds no tokenizer
    head: str  # what every layer's head reads, for docs/backbones.md's table

    def load_model_class(self):
        return getattr(importlib.import_module(self.adapter), self.model_class)

    def load_tokenizer_class(self):
        return getattr(importlib.import_module("transformers"), self.tokenizer_class)


def backbone_name(model_type):
    """The backbone a config's model_type stands for (ours or transformers')."""
    return model_type.removeprefix(EARLY_EXIT)


WORDPIECE = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
BACKBONES = {
    b.name: b
    for b in [
        Backbone("bert", "pabee.modeling.adapters.bert", "BertForSequenceClassificationWithPabee", "BertTokenizer",
                 "bert-base-uncased", WORDPIECE, "[CLS] -> BERT pooler (dense, tanh) -> linear"),
        Backbone("albert", "pabee.modeling.adapters.albert", "AlbertForSequenceClassificationWithPabee", "AlbertTokenizer",
                 "albert-base-v2", ("tokenizer.json", "tokenizer_config.json", "spiece.model"),
                 "[CLS] -> ALBERT pooler (dense, tanh) -> linear"),
        Backbone("roberta", "pabee.modeling.adapters.roberta", "RobertaForSequenceClassificationWithPabee", "RobertaTokenizer",
                 "FacebookAI/roberta-base", ("tokenizer.json", "tokenizer_config.json", "vocab.json"),
                 "<s> -> dense, tanh -> out_proj (RobertaClassificationHead)"),
        Backbone("distilbert", "pabee.modeling.adapters.distilbert", "DistilBertForSequenceClassificationWithPabee",
                 "DistilBertTokenizer", "distilbert/distilbert-base-uncased", WORDPIECE,
                 "[CLS] -> pre_classifier, ReLU -> classifier"),
        Backbone("electra", "pabee.modeling.adapters.electra", "ElectraForSequenceClassificationWithPabee", "ElectraTokenizer",
                 "google/electra-base-discriminator", WORDPIECE,
                 "[CLS] -> dense, GELU -> out_proj (ElectraClassificationHead)"),
        Backbone("deberta-v2", "pabee.modeling.adapters.deberta_v2", "DebertaV2ForSequenceClassificationWithPabee",
                 "DebertaV2Tokenizer", "microsoft/deberta-v3-base", ("tokenizer.json", "tokenizer_config.json", "spm.model"),
                 "[CLS] -> ContextPooler (dense, activation) -> classifier"),
        Backbone("modernbert", "pabee.modeling.adapters.modernbert", "ModernBertForSequenceClassificationWithPabee",
                 "PreTrainedTokenizerFast", "answerdotai/ModernBERT-base", ("tokenizer.json",),
                 "final norm -> [CLS] or mean (classifier_pooling) -> dense, activation, norm -> classifier"),
    ]
}


def check_model_available(name, flag, cache_dir=None, download=True):
    """What every entry point checks of a model it names before anything runs: a local folder
    exists, a hub name looks like one and, when it must be downloaded, can be."""
    check_model_reference(name, flag)
    if download:
        check_hub_reachable(name, flag, cache_dir)


def check_model_reference(name, flag):
    """A local folder must exist; anything else must at least look like a hub name."""
    if not name or Path(name).is_dir():
        return
    if Path(name).exists() or Path(name).is_symlink() or name.startswith((".", "/", "~")) \
            or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        what = "is a file" if Path(name).is_file() else describe_missing(name)
        raise UsageError(f"--{flag} {name} is not a model folder ({what}): give an existing folder or a hub name")


def check_hub_reachable(name, flag, cache_dir=None):
    """A hub name that is neither a folder nor cached must be downloaded: say at once when that
    cannot happen instead of letting the download retry for half a minute. Names the variable or
    flag to set when a script's default put the name there (PABEE_DEFAULT_MODEL)."""
    if not name or Path(name).is_dir():
        return
    why = hub_unavailable(name, "model", cache_dir)
    if why is None:
        return
    source = (" (the script's default: set MODEL_NAME_OR_PATH to a model folder)"
              if flag == "model_name_or_path" and os.environ.get("PABEE_DEFAULT_MODEL") == name else "")
    raise UsageError(f"--{flag} {name} must come from the hub, but {why}{source}: give a local model folder")


def load_config(backbone, name, cache_dir=None, **overrides):
    """The backbone's own config class, filled from `name`'s config (a folder saved with our model
    type, "pabee-<backbone>", included: transformers does not know that type, and this process does
    not teach it, so that the folder's own code stays what transformers loads with trust_remote_code)."""
    from transformers import CONFIG_MAPPING, PreTrainedConfig

    try:
        saved, _ = PreTrainedConfig.get_config_dict(name, cache_dir=cache_dir)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a model config from {name} ({first_line(e)}): check --model_name_or_path") from None
    if not saved.get("model_type"):
        raise UsageError(f"cannot load a model config from {name} (no config.json with a model_type there): check "
                         "--model_name_or_path")
    model_type = str(saved["model_type"])
    if backbone_name(model_type) != backbone.name:
        raise UsageError(
            f"{name} holds a '{model_type}' model but --model_type is {backbone.name}: "
            f"pass --model_type {backbone_name(model_type)} or another model"
        )
    return CONFIG_MAPPING[backbone.name].from_dict({k: v for k, v in saved.items() if k != "model_type"}, **overrides)


def backbone_of_folder(folder):
    """The backbone of a model folder, from its config.json's model_type."""
    model_type = str(read_json(Path(folder) / "config.json").get("model_type"))
    if backbone_name(model_type) not in BACKBONES:
        raise UsageError(f"{folder} holds a '{model_type}' model, not one of {', '.join(BACKBONES)}")
    return BACKBONES[backbone_name(model_type)]


def load_model(backbone, path, task, device, config_name="", cache_dir=None, **settings):
    """The PABEE model for `task` (None: the labels its config holds, as a fine-tuned model's) from
    a plain backbone, a fine-tuned model or a checkpoint, and
    what loading found: {"missing_keys": parameters the checkpoint lacked (initialised fresh),
    "unexpected_keys": its parameters the model has no place for, "new_heads": the layers (0-based)
    whose head was among the missing, "new_head_parameters": the missing that belong to heads or
    what feeds them, "dropped_keys": parameters of layers beyond a `num_hidden_layers` setting}. `settings` go into the config
    (exit_pooling, exit_training). transformers' load report is silenced: `log_new_parameters`
    says it in one line, once the run's inputs are all checked."""
    from transformers.utils import logging as hf_logging

    config = load_config(backbone, config_name or path, cache_dir, **task_labels(task))
    if settings.get("exit_pooling") is None and getattr(config, "exit_pooling", None) is None:
        settings = {**settings, "exit_pooling": declared_pooling(path)}
    report = hf_logging.get_logger("transformers.modeling_utils")
    report.addFilter(without_load_report)
    for name, value in settings.items():  # from_pretrained would drop attributes the config class lacks
        if value is not None:
            setattr(config, name, value)
    try:
        model, info = backbone.load_model_class().from_pretrained(path, config=config, cache_dir=cache_dir,
                                                                  output_loading_info=True)
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    except Exception as e:  # missing, truncated or foreign weights: the loaders raise many kinds
        raise UsageError(f"cannot load model weights from {path} ({first_line(e)}): check the folder or hub name") from None
    finally:
        report.removeFilter(without_load_report)
    depth = settings.get("num_hidden_layers")
    dropped = sorted(k for k in unexpected if depth and beyond(k, depth))
    return model.to(device), {"missing_keys": missing, "unexpected_keys": sorted(set(unexpected) - set(dropped)),
                              "dropped_keys": dropped,
                              "new_heads": model.new_heads(missing),
                              "new_head_parameters": [k for k in missing if k.startswith(model.head_parameters)]}


POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "first"}


def declared_pooling(path):
    """The exit pooling a sentence-transformers folder declares for its embeddings (its Pooling
    module's config: mean of the tokens, or the first), else None. Heads that read what the
    checkpoint was trained to summarise learn from lower layers too: all-MiniLM-L6-v2's first token
    says little below layer 4."""
    folder = Path(path)
    modules = folder / "modules.json"
    listed = read_json(modules) if modules.is_file() else []
    listed = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    where = next((str(m.get("path", "")) for m in listed if str(m.get("type", "")).endswith(".Pooling")), "1_Pooling")
    config = folder / where / "config.json"
    if not config.is_file():
        return None
    modes = read_json(config)
    pooling = next((name for key, name in POOLING_MODES.items() if modes.get(key)), None)
    if pooling:
        logger.info("%s declares %s pooling (%s): exit heads read the %s (--exit_pooling decides otherwise)", path,
                    pooling, config.relative_to(folder), "mean of the tokens" if pooling == "mean" else "first token")
    return pooling


def task_labels(task):
    """What a model's config says of its task: the number of labels and their names."""
    if task is None:
        return {}
    names = {"id2label": dict(enumerate(task.labels)), "label2id": {n: i for i, n in enumerate(task.labels)}} \
        if task.labels else {}
    kind = {"problem_type": "regression"} if task.num_labels == 1 else {}  # pipeline: the value, not its sigmoid
    return {"num_labels": task.num_labels, "finetuning_task": task.name, **names, **kind}


def usable_length(requested, configs, tokenizer):
    """--max_seq_length as the models can honour it: clamped to their positions (or the tokenizer's
    limit), as transformers' run_glue does. Returns the length and, when clamped, the warning."""
    limit = min([c.max_position_embeddings for c in configs] + [tokenizer.model_max_length])
    if requested <= limit:
        return requested, None
    return limit, f"--max_seq_length {requested} is more than the model takes ({limit} positions): using {limit}"


def layer_index(key):
    """The layer a parameter name belongs to (encoder.layer.3..., layers.3...), else None."""
    found = re.search(r"(?:^|\.)(?:layer|layers)\.(\d+)\.", key)
    return int(found.group(1)) if found else None


def beyond(key, depth):
    """Whether a parameter belongs to a layer, or to the head of a layer, past the first `depth`."""
    index = layer_index(key)
    if key.startswith("classifiers."):
        return int(key.split(".")[1]) >= depth - 1  # the head of layer `depth` is the final head
    return index is not None and index >= depth


def without_load_report(record):
    """A logging filter: drops transformers' LOAD REPORT table (log_new_parameters says it in a line)."""
    return "LOAD REPORT" not in record.getMessage()


def log_new_parameters(path, info):
    """Quiet (info) when only classifier heads are new, as from a plain backbone; a warning when
    anything else is missing or unexpected."""
    missing, unexpected, heads = info["missing_keys"], info["unexpected_keys"], info["new_heads"]
    if info.get("dropped_keys"):
        logger.info("%s: the %d parameters of layers %d and up are left out (--num_hidden_layers)", path,
                    len(info["dropped_keys"]),
                    min(layer_index(k) for k in info["dropped_keys"] if layer_index(k) is not None) + 1)
    others = [k for k in missing if k not in info["new_head_parameters"]]
    if heads and not others and not unexpected:
        logger.info("%s: %d classifier heads are new (layers %s), as expected when starting from a plain backbone",
                    path, len(heads), ",".join(str(i + 1) for i in heads))
    elif others or unexpected:
        logger.warning("%s: loaded with %d parameters missing (initialised fresh: %s) and %d unexpected (ignored: %s); "
                       "check that the checkpoint matches --model_type", path, len(missing),
                       ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""), len(unexpected),
                       ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))


def load_tokenizer(backbone, name, do_lower_case=False, cache_dir=None):
    if Path(name).is_dir() and not any((Path(name) / f).is_file() for f in backbone.tokenizer_files):
        # transformers would build an empty-vocabulary tokenizer here, and every word would be [UNK]
        raise UsageError(f"no tokenizer files in {name} ({', '.join(backbone.tokenizer_files)}): pass --tokenizer_name")
    extra = {"do_lower_case": True} if do_lower_case else {}
    try:
        return backbone.load_tokenizer_class().from_pretrained(name, cache_dir=cache_dir, **extra)
    except Exception as e:  # missing or damaged files: the tokenizer loaders raise many kinds
        raise UsageError(f"cannot load a tokenizer from {name} ({first_line(e)}): pass --tokenizer_name") from None
