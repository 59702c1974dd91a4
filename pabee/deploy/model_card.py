"""What a run folder says of itself once evaluated: its config's default exit is the one predict.py
chooses (so that transformers, loading the folder, answers as predict.py does), and its README.md
is a model card the hub reads: YAML metadata, how to load it, the chosen exit and why, and the exit
table. Every figure in the card comes from the run's own files (results, training settings,
config); what they do not record is left out."""

import logging
from pathlib import Path

from pabee.base.file_io import read_json, write_json, write_text
from pabee.data import glue
from pabee.modeling.backbones import EARLY_EXIT, backbone_name, backbone_of_folder, load_config
from pabee.scoring.default_exit import chosen_exit
from pabee.scoring.report import markdown_table
from pabee.scoring.result_rows import dev_rows, read_calibration

logger = logging.getLogger(__name__)
CARD = "README.md"
MARK = "<!-- written by run_glue.py (pabee/deploy/model_card.py) from this folder's files; rewritten after each evaluation -->"
OUR_MARKS = (MARK, MARK.replace("pabee/deploy/model_card.py", "pabee/card.py"))  # cards written before the package's move
HUB_METRICS = {"acc": "accuracy", "f1": "f1", "mcc": "matthews_correlation", "pearson": "pearsonr",
               "spearmanr": "spearmanr"}  # our metric names -> the hub's metric ids


def set_default_exit(folder):
    """Writes predict.py's chosen exit into the folder's config.json (exit_criterion and its
    setting: patience, or exit_setting) and returns (settings, why)."""
    settings, why = chosen_exit(folder)
    config_file = Path(folder) / "config.json"
    config, setting = read_json(config_file), settings.settings[0]
    chosen = dict(exit_criterion=settings.criterion, regression_threshold=settings.regression_threshold,
                  **({"patience": setting} if settings.criterion == "patience" else {"exit_setting": setting}))
    if any(config.get(key) != value for key, value in chosen.items()):
        logger.info("%s answers by default with %s %s now (predict.py's choice; config.json)", folder,
                    settings.criterion, setting)
        write_json(config_file, {**config, **chosen})
    return settings, why


def write_card(folder, settings, why):
    """README.md in the run folder `folder` (its final model), from its own files; a README.md
    this module did not write (a model's own card) is kept."""
    folder = Path(folder)
    if (folder / CARD).is_file() and not any(mark in (folder / CARD).read_text(encoding="utf-8", errors="replace")
                                            for mark in OUR_MARKS):
        logger.info("%s is not a card run_glue.py wrote: kept as it is", folder / CARD)
        return
    config = load_config(backbone_of_folder(folder), str(folder))
    config.model_type = read_json(folder / "config.json")["model_type"]  # ours or the backbone's: how it loads
    record = read_json(folder / "training_args.json") if (folder / "training_args.json").is_file() else {}
    rows, (_, chosen_on) = dev_rows(folder), read_calibration(folder)
    setting = settings.settings[0]
    lines = [metadata(config, record, rows), MARK, "", f"# {folder.name}", "",
             f"A {backbone_name(config.model_type)} classifier with a head after each of its "
             f"{config.num_hidden_layers} layers, fine-tuned with this project's run_glue.py "
             f"(--exit_training {config.exit_training}, heads reading the "
             f"{'mean of the tokens' if config.exit_pooling == 'mean' else 'first token'}). PABEE (Zhou et al., "
             "\"BERT Loses Patience: Fast and Robust Inference with Early Exit\", NeurIPS 2020) and the later exit rules "
             "let each example stop at the first layer whose answer the rule trusts.", "",
             "## Load it", "", f"From the folder that holds `{folder.name}/` (or, once it is on the hub, with its "
             "repo id, `user/name`, in its place):", "", "```python", "from transformers import pipeline",
             f'classifier = pipeline("text-classification", model="{folder.name}", trust_remote_code=True)',
             'print(classifier("a gripping, funny film"))', "```", "",
             plain_loading(config), "",
             "## The exit it answers with", "",
             f"`{settings.criterion}` at `{setting}` ({why}). Another exit: "
             f"`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, "
             f"{'patience=2' if settings.criterion == 'patience' else 'exit_setting=...'})`; the answer's "
             "`exit_layers` say where each example stopped.", ""]
    lines += exit_table(rows, chosen_on) + training_lines(record, folder)
    write_text(folder / CARD, "\n".join(lines) + "\n")


def metadata(config, record, rows):
    base = (record.get("model") or {}).get("model_name_or_path")
    data = record.get("data") or {}
    task = glue.TASKS.get(str(data.get("task_name", "")).lower())
    dataset = data.get("dataset_name") or ("nyu-mll/glue" if task and not data.get("train_file") else None)
    metrics = sorted({HUB_METRICS.get(k, k) for r in rows for k in r.metrics if "[" not in k})
    tags = ["early-exit", "pabee", backbone_name(config.model_type)]
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:"]
    lines += [f"- {t}" for t in tags]
    if base and not Path(base).exists():  # a hub name; a local folder is no base_model the hub knows
        lines.append(f"base_model: {base}")
    if dataset:
        lines += ["datasets:", f"- {dataset}"]
    if metrics:
        lines += ["metrics:"] + [f"- {m}" for m in metrics]
    return "\n".join(lines + ["---", ""])


def plain_loading(config):
    if config.model_type.startswith(EARLY_EXIT):
        what = "mean of the tokens" if config.exit_pooling == "mean" else "first token"
        return (f"Without `trust_remote_code`, transformers refuses this folder: its heads read the {what}, which "
                "transformers' own class does not (pass `trust_remote_code=True` to AutoTokenizer too). `export.py` "
                "cannot write it as a plain model either.")
    return ("Without `trust_remote_code`, `AutoModelForSequenceClassification.from_pretrained(folder)` builds "
            "transformers' own class, which answers exactly as this model's full depth (every layer, the last "
            "head); `export.py --model_dir folder --output_dir plain [--layers k] [--onnx]` writes a plain model of "
            "the first k layers.")


def exit_table(rows, chosen_on):
    if not rows:
        return ["## Exit table", "", "Not evaluated: run_glue.py --do_eval writes the table.", ""]
    where = chosen_on or "dev"
    return ["## Exit table", "",
            f"Every setting evaluated on dev (the exit above was chosen on {where}); a `layer` row is one layer's "
            "own head, what `export.py --layers k` keeps:", "", markdown_table(rows)]


def training_lines(record, folder):
    training, model = record.get("training") or {}, record.get("model") or {}
    if not training:
        return []
    state = folder / "trainer_state.json"
    steps = read_json(state)["global_step"] if state.is_file() else None
    facts = [("base model", model.get("model_name_or_path")), ("task", (record.get("data") or {}).get("task_name")),
             ("steps", steps), ("learning rate", training.get("learning_rate")),
             ("batch size", training.get("per_gpu_train_batch_size")), ("seed", record.get("seed"))]
    return ["## Training", ""] + [f"- {name}: {value}" for name, value in facts if value is not None] + [""]
