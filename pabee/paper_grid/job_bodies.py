"""What one job of the paper's grid does (`do_job`): train a run, evaluate its exit settings on
dev, or predict the test set at a table cell's setting, each through pabee/fine_tuning/pipeline.py's
one-run pipeline; a finished job is marked so it is reused."""

import shutil
from pathlib import Path

from pabee.base.errors import UsageError
from pabee.base.file_io import read_json, write_json
from pabee.base.run_folder import list_checkpoints
from pabee.data.data_settings import DataSettings
from pabee.early_exit.exit_settings import ExitSettings
from pabee.fine_tuning.pipeline import run as run_glue
from pabee.fine_tuning.run_settings import EvalSettings, ModelSettings, RunSettings, TrainingSettings
from pabee.paper_grid import paper_table
from pabee.paper_grid.run_plan import DONE, check_same_choice, exits_to_evaluate, prediction_marker, predictions_of, steps_of


def run_settings(settings, run, model, exits, training=None, do_predict=False):
    """What pabee.fine_tuning.pipeline does for one run: train it (`training`) or evaluate `exits` on dev."""
    return RunSettings(
        output_dir=str(run.folder),
        model=ModelSettings(settings.backbone, model, do_lower_case=settings.do_lower_case,
                            exit_pooling=settings.exit_pooling),
        data=DataSettings(task_name=run.task.folder, data_dir=str(Path(settings.glue_dir) / run.task.folder),
                          max_seq_length=settings.max_seq_length, choose_exit_on=settings.choose_exit_on),
        exits=exits, training=training, do_eval=True, do_predict=do_predict,
        evaluation=EvalSettings(per_gpu_eval_batch_size=settings.per_gpu_eval_batch_size), seed=run.seed,
        overwrite_output_dir=True)


def train(settings, run, depth):
    """Fine-tunes one run (or resumes it from its last checkpoint); a finished run is reused."""
    check_same_choice(settings, run)
    if (run.folder / DONE).is_file():
        return "reused"
    checkpoints = list_checkpoints(run.folder)
    training = TrainingSettings(
        exit_training=paper_table.MODELS[run.model], head_bias_init="label_prior",
        num_hidden_layers=(settings.k_layers or max(1, depth // 2)) if run.model == "k-layer" else 0,
        per_gpu_train_batch_size=run.batch_size, learning_rate=float(run.learning_rate),
        num_train_epochs=settings.num_train_epochs, max_steps=settings.max_steps,
        logging_steps=50, save_steps=max(1, steps_of(settings, run) // 4))
    start = str(checkpoints[-1]) if checkpoints else settings.model_name_or_path
    exits = ExitSettings(regression_threshold=settings.regression_threshold)
    run_glue(run_settings(settings, run, start, exits, training))
    for checkpoint in list_checkpoints(run.folder):
        shutil.rmtree(checkpoint)  # the run is done: its final model is all that is read from now on
    write_json(run.folder / DONE, {"run": run.describe()})
    return "resumed" if checkpoints else "trained"


def evaluate(settings, run, exits, predict=False):
    """Exit settings `exits` of one finished run on dev (rows added to its pabee_results.json); once."""
    marker = prediction_marker(run, exits.criterion, exits.settings[0]) if predict else \
        run.folder / f"reproduce_{exits.criterion}.json"
    if marker.is_file():
        return
    run_glue(run_settings(settings, run, str(run.folder), exits, do_predict=predict))
    write_json(marker, {"criterion": exits.criterion, "settings": list(exits.settings)})


def do_job(settings, runs, depth, key):
    """One piece of the grid, as a launcher's --job names it: train:I (run I, 1-based, of the plan),
    evaluate:I (run I's exit settings on dev), predict:I (run I on test at the setting of each
    paper_table.json cell it stands for)."""
    kind, index = key.split(":")
    run = runs[int(index) - 1]
    if kind == "train":
        print(f"{run.describe()}: {train(settings, run, depth)}", flush=True)
    elif kind == "evaluate":
        for exits in exits_to_evaluate(settings, run.task, run.model, depth):
            evaluate(settings, run, exits)
    elif kind == "predict":
        for criterion, setting in predictions_of(read_json(Path(settings.output_dir) / "paper_table.json"), run):
            evaluate(settings, run, ExitSettings(criterion, (setting,), settings.regression_threshold), predict=True)
    else:
        raise UsageError(f"--job {key}: give train:I, evaluate:I or predict:I")
