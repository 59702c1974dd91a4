"""One run of run_glue, read top to bottom in `run`: inputs checked -> the source of examples and
the exit plan -> the model and its features -> training -> evaluation -> reports. Everything comes
in as settings (pabee.fine_tuning.run_settings): run_glue.py builds them from its flags, reproduce_paper.py and
demo.py build them directly. Bad input stops with a UsageError before anything is written."""

import contextlib
import logging
import os
from dataclasses import asdict
from pathlib import Path

from pabee.base.choices import CLASSIFICATION_ONLY
from pabee.base.errors import UsageError
from pabee.base.file_io import read_json, write_json
from pabee.base.output_dir import OutputLock, check_writable
from pabee.base.run_folder import list_checkpoints, resume_folder
from pabee.data.features import prepare_features
from pabee.data.sources import open_source
from pabee.deploy.model_card import set_default_exit, write_card
from pabee.fine_tuning.checkpoints import check_resumable
from pabee.fine_tuning.loop import train, unwrap
from pabee.fine_tuning.processes import set_seed, start_runtime
from pabee.fine_tuning.run_settings import ExitPlan
from pabee.modeling.backbones import (
    BACKBONES, check_model_available, load_config, load_model, load_tokenizer, log_new_parameters, usable_length)
from pabee.modeling.saved_folder import save_folder, saved_by_us
from pabee.scoring.evaluation import (
    EvalSet, beside_fp32, collapse, evaluate, full_depth_predictions, predict_test_sets)
from pabee.scoring.report import (
    print_exit_lines, warn_ignored_inputs, write_calibration, write_eval_results, write_report, write_submissions)
from pabee.scoring.result_rows import CALIBRATION

logger = logging.getLogger(__name__)


def run(settings):
    """Trains and/or evaluates as `settings` (run_settings.RunSettings) say; returns the result rows
    of the evaluation (none without --do_eval). The output folder is this run's alone while it
    runs (a second run into it is refused at once)."""
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun's other processes write nothing of their own
    with OutputLock(settings.output_dir) if main_process else contextlib.nullcontext():
        return train_and_evaluate(settings)


def train_and_evaluate(settings):
    """run's body, once the output folder is this run's."""
    check_output_dir(settings)
    backbone = BACKBONES[settings.model.model_type]
    models = models_to_load(settings)
    source = open_source(settings.data, settings.wanted_splits(), settings.seed, settings.cache_dir,
                         lambda: load_config(backbone, models[0], settings.cache_dir))
    plan = ExitPlan.of(settings.exits, source)
    check_models(settings)
    check_exit_choice(settings, models)
    resume = resume_folder(settings.model.model_name_or_path) if settings.training else None
    if resume is not None:
        check_resumable(resume)
    runtime = start_runtime(settings.device)
    set_seed(settings.seed)
    config_names = [settings.model.config_name or models[0]] if settings.training else models
    configs = [load_config(backbone, name, settings.cache_dir) for name in config_names]
    tokenizer = load_tokenizer(backbone, settings.model.tokenizer_name or models[0], settings.model.do_lower_case,
                               settings.cache_dir)
    check_model_fits(settings, plan, configs)
    max_seq_length, clamped = usable_length(settings.data.max_seq_length, configs, tokenizer)
    model, loaded = load_model(backbone, models[0], plan.task, runtime.device, settings.model.config_name,
                               settings.cache_dir, exit_pooling=settings.model.exit_pooling, **regime(settings))
    features = prepare_features(source, splits_of(settings, plan), tokenizer, max_seq_length, runtime,
                                settings.cache_dir, settings.data.overwrite_cache)  # bad data stops us here
    # Every input is checked: what is worth saying about them comes now, not before an error line.
    check_writable(settings.output_dir, "--output_dir")
    if clamped:
        logger.warning(clamped)
    log_new_parameters(models[0], loaded)
    logger.info("device %s, %d GPUs, distributed %s, amp %s", runtime.device, runtime.n_gpu, runtime.distributed,
                runtime.amp_dtype)
    if settings.training:
        fine_tune(settings, plan, runtime, model, loaded["new_heads"], tokenizer, features, resume)
    rows = []
    if (settings.do_eval or settings.do_predict) and runtime.is_main:
        rows = evaluate_and_report(settings, plan, runtime, backbone, features, final_model=model)
    if runtime.is_main:
        publish(settings)
    runtime.shut_down()
    return rows


def publish(settings):
    """The output folder's models that this project saved answer by default with the exit predict.py
    chooses from their results (config.json), and the run folder holding one gets its model card."""
    out = Path(settings.output_dir).resolve()
    for _, folder in models_to_evaluate(settings):
        if saved_by_us(folder) and Path(folder).resolve() in (out, *(c.resolve() for c in list_checkpoints(out))):
            chosen = set_default_exit(folder)
            if Path(folder).resolve() == out:
                write_card(out, *chosen)


def check_output_dir(settings):
    out = Path(settings.output_dir)
    if settings.training and out.is_dir() and any(out.iterdir()) and not settings.overwrite_output_dir:
        raise UsageError(f"output directory {out} exists and is not empty: pass --overwrite_output_dir or "
                         "another --output_dir")
    quantized = settings.evaluation.quantize != "none"
    if quantized and (settings.training or (out / "config.json").is_file()):  # its results would be the model's
        raise UsageError(f"--quantize {settings.evaluation.quantize} writes the quantized model's results, which "
                         f"predict.py and the model card would take for {out}'s own: evaluate into another "
                         "--output_dir (without --do_train)")


def check_exit_choice(settings, models):
    """A training slice to choose the exit on is held out by a run that trains, or evaluated again
    on a model whose training held out the same slice of the same data with the same seed; any
    other model has seen those rows."""
    choice = settings.data.choose_exit_on
    if choice.where != "train" or settings.training or not settings.do_eval:
        return
    for folder in models:
        saved = Path(folder) / "training_args.json"
        record = read_json(saved) if saved.is_file() else {}
        if training_rows(record.get("data", {}), record.get("seed")) != training_rows(asdict(settings.data),
                                                                                        settings.seed):
            raise UsageError(f"--choose_exit_on train:{choice.percentage:g} holds rows out of training, and {folder} "
                             f"was not trained holding out that slice of this data with --seed {settings.seed}: use "
                             "it with --do_train, or give a file of labelled rows the model has not seen")


def training_rows(data, seed):
    """What decides which rows a run trained on: the data, its split, the slice held out, the seed."""
    def where(path):
        return str(Path(path).resolve()) if path else None

    held = data.get("choose_exit_on") or {}
    return (data.get("task_name"), where(data.get("data_dir")), where(data.get("train_file")), data.get("dataset_name"),
            data.get("validation_split_percentage"), held.get("where"), held.get("percentage"), seed)


def check_models(settings):
    """Model, config and tokenizer names exist, and can be downloaded when they must be."""
    downloads = bool(settings.training) or not (Path(settings.output_dir) / "config.json").is_file()
    for flag in ("model_name_or_path", "config_name", "tokenizer_name"):
        check_model_available(getattr(settings.model, flag), flag, settings.cache_dir, downloads)


def models_to_load(settings):
    """The model to train, or the models to evaluate (see models_to_evaluate)."""
    if settings.training:
        return [settings.model.model_name_or_path]
    return [folder for _, folder in models_to_evaluate(settings)]


def models_to_evaluate(settings):
    """(name, folder) pairs: the trained or given model, then every checkpoint-N if asked."""
    out = Path(settings.output_dir)
    found = [("final", str(out) if (out / "config.json").is_file() else settings.model.model_name_or_path)]
    if settings.evaluation.eval_all_checkpoints:
        found += [(p.name, str(p)) for p in list_checkpoints(out) if (p / "config.json").is_file()]
    return found


def regime(settings):
    """What training writes into the model's config."""
    if not settings.training:
        return {}
    return {"exit_training": settings.training.exit_training,
            "distill_temperature": settings.training.distill_temperature,
            "num_hidden_layers": settings.training.num_hidden_layers or None}


def check_model_fits(settings, plan, configs):
    """What the model does not have: layers beyond its depth (--num_hidden_layers, fixed exits), a
    learning-to-exit head for a rule that reads it; class logits for a regime that reads them."""
    if settings.training and settings.training.exit_training in CLASSIFICATION_ONLY and plan.task.is_regression:
        raise UsageError(f"--exit_training {settings.training.exit_training} reads class logits and "
                         f"{plan.task.folder} is a regression task: use pabee, equilibrium or alternate_lte")
    regimes = [settings.training.exit_training] if settings.training else [getattr(c, "exit_training", "pabee")
                                                                          for c in configs]
    for exit_training in regimes:
        plan.exits.check_learned_exit(exit_training)
    depth = min(c.num_hidden_layers for c in configs)
    k = settings.training.num_hidden_layers if settings.training else 0
    if k > depth:
        raise UsageError(f"--num_hidden_layers {k} is more than the model's {depth} layers: give 1 to {depth}")
    plan.exits.check_depth(k or depth)


def splits_of(settings, plan):
    """(task, split) pairs the run reads: the training task's train and calibration splits, the
    evaluated tasks' dev and test splits."""
    return [(task, split) for split in settings.wanted_splits()
            for task in ((plan.task,) if split in ("train", "calibration") else plan.eval_tasks)]


def fine_tune(settings, plan, runtime, model, heads_new, tokenizer, features, resume):
    """Trains `model` in place and saves it in the output dir, then warns if it collapsed."""
    if settings.training.head_bias_init == "label_prior":
        model.init_head_bias(features[plan.task.name, "train"]["label"], heads_new)
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = settings.record()
    if runtime.is_main:
        write_json(out / "training_args.json", record)
        (out / CALIBRATION).unlink(missing_ok=True)  # an earlier model's: this one is chosen for anew
    dev_sets = eval_sets(settings, plan, runtime, features, "dev", tokenizer)  # empty when no dev split was asked for
    steps = train(settings.training, runtime, model, tokenizer, features[plan.task.name, "train"], out, settings.seed,
                  record, dev_sets if settings.training.evaluate_during_training else (), resume)
    if runtime.is_main:
        save_folder(unwrap(model), tokenizer, out)
        write_json(out / "trainer_state.json", {"global_step": steps})
        logger.info("Trained %d steps; model saved to %s", steps, out)
        warn_if_collapsed(runtime, model, dev_sets)
    runtime.barrier()


def warn_if_collapsed(runtime, model, dev_sets):
    """One warning line per dev set on which the trained model's full-depth answers ignore the input."""
    predictions = full_depth_predictions(runtime, model, dev_sets)
    for dev in dev_sets:
        sign = collapse(dev.task, predictions[dev.task.name], dev.labels)
        if sign:
            logger.warning("fine-tuning collapsed on %s: %s. Try --head_bias_init label_prior, --exit_pooling mean, "
                           "a lower --learning_rate or more --warmup_steps (docs/real_model.md)",
                           dev.task.folder, sign)


def eval_sets(settings, plan, runtime, features, split, tokenizer):
    batch_size = settings.evaluation.per_gpu_eval_batch_size * max(1, runtime.n_gpu)
    return [EvalSet.of(t, features[t.name, split], tokenizer.pad_token_id, batch_size, settings.evaluation.buckets,
                       settings.evaluation.engine_step)
            for t in plan.eval_tasks if (t.name, split) in features]


def evaluate_and_report(settings, plan, runtime, backbone, features, final_model):
    """Every model to evaluate on the dev sets (rows, console lines, reports), and the final
    model's test-set submission files. The final model is the one trained or loaded already."""
    Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
    rows, calibration = [], []
    for name, folder in models_to_evaluate(settings):
        model = final_model
        if name != "final":
            model, loaded = load_model(backbone, folder, plan.task, runtime.device, settings.model.config_name,
                                       settings.cache_dir, exit_pooling=settings.model.exit_pooling)
            log_new_parameters(folder, loaded)
        tokenizer = load_tokenizer(backbone, settings.model.tokenizer_name or folder, settings.model.do_lower_case,
                                   settings.cache_dir)
        running = on_runtime(model, folder, settings) if settings.do_eval or (settings.do_predict and
                                                                              name == "final") else model
        if settings.do_eval:
            dev = eval_sets(settings, plan, runtime, features, "dev", tokenizer)
            new = evaluate(runtime, plan, running, dev, name, settings.evaluation.repeats)
            if settings.evaluation.quantize != "none":  # what quantizing costs, setting by setting
                new = beside_fp32(new, evaluate(runtime, plan, model, dev, name))
            print_exit_lines(new)
            warn_ignored_inputs(new)
            rows += new
            calibration += evaluate(runtime, plan, running,
                                    eval_sets(settings, plan, runtime, features, "calibration", tokenizer), name)
        if settings.do_predict and name == "final":
            tests = eval_sets(settings, plan, runtime, features, "test", tokenizer)
            write_submissions(settings.output_dir, plan.criterion, tests, predict_test_sets(runtime, plan, running, tests))
    if settings.do_eval:
        write_eval_results(settings.output_dir, rows)
        write_report(settings.output_dir, rows, final_step(settings.output_dir))
    if calibration:
        size = calibration[0].n
        write_calibration(settings.output_dir, calibration,
                          settings.data.choose_exit_on.describe(size, settings.seed))
    return rows


def on_runtime(model, folder, settings):
    """The model as --runtime runs it: itself, or its cuts on ONNX Runtime, cached beside the model
    (in the output folder when the model is a hub name)."""
    if settings.evaluation.runtime == "torch":
        return model
    from pabee.deploy.ort_model import ort_model

    return ort_model(model, folder if Path(folder).is_dir() else settings.output_dir, settings.evaluation.quantize)


def final_step(output_dir):
    state = Path(output_dir) / "trainer_state.json"
    return read_json(state)["global_step"] if state.is_file() else 0
