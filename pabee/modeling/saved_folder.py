"""A saved model folder that loads outside this project: the model and tokenizer as transformers
saves them, the code of pabee/modeling/remote_code.py, and config.json's auto_map. Without
`trust_remote_code`, transformers builds its own XForSequenceClassification where that class answers
exactly as our full depth (its last head is our `classifier`, and the heads read what that class
reads), and otherwise refuses with its custom-code message: config.json's model_type is then
"pabee-<backbone>", which transformers does not know (the package reads it as its backbone's
config: backbones.load_config)."""

from pathlib import Path

from pabee.base.file_io import read_json, write_json
from pabee.modeling.backbones import EARLY_EXIT, backbone_name
from pabee.modeling.remote_code import CONFIG_FILE, MODEL_FILE, write_code

AUTO_MAP = {"AutoConfig": f"{CONFIG_FILE}.PabeeConfig",
            "AutoModelForSequenceClassification": f"{MODEL_FILE}.PabeeForSequenceClassification"}


def answers_as_plain_class(model):
    """Whether transformers' own XForSequenceClassification, given these weights, answers exactly as
    this model's full depth: its heads read what that class reads (`default_exit_pooling`)."""
    return model.config.exit_pooling == model.default_exit_pooling(model.config)


def save_folder(model, tokenizer, folder):
    """The model and tokenizer in `folder` (save_pretrained), with the code that loads the early-exit
    model and config.json's model_type and auto_map saying how to load it."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    declare_token_types(tokenizer, model.config, Path(folder))
    name = backbone_name(model.config.model_type)
    model_type = name if answers_as_plain_class(model) else EARLY_EXIT + name
    write_code(Path(folder), type(model), name, model_type)
    config = read_json(Path(folder) / "config.json")
    config["model_type"], config["auto_map"] = model_type, AUTO_MAP
    write_json(Path(folder) / "config.json", config)


def declare_token_types(tokenizer, config, folder):
    """run_glue and predict.py ask the tokenizer for token_type_ids; where the model tells the types
    apart (type_vocab_size > 1) and the tokenizer leaves them out unasked (ALBERT's), its saved config
    lists them, or a pipeline would feed the model other inputs than run_glue did."""
    names = list(tokenizer.model_input_names)
    if getattr(config, "type_vocab_size", 0) > 1 and "token_type_ids" not in names:
        config = read_json(folder / "tokenizer_config.json")
        config["model_input_names"] = [names[0], "token_type_ids", *names[1:]]
        write_json(folder / "tokenizer_config.json", config)


def saved_by_us(folder):
    """Whether `folder` is a model folder save_folder wrote (not, say, a model from the hub)."""
    return (Path(folder) / f"{MODEL_FILE}.py").is_file() and (Path(folder) / "config.json").is_file()
