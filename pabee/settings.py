"""What a run is asked to do, decided once (from the flags by run_glue.py, or built by a script such
as reproduce_paper.py or demo.py) and never changed after: frozen settings that cross every module
boundary instead of the parsed flags. Field names are the flags' names and their defaults are the
flags' defaults (run_glue.py reads them from here). No torch here: flags are checked at once."""

import math
import re
from dataclasses import asdict, dataclass, field

from pabee.errors import UsageError
from pabee.exit_rules import RULES, PatienceRule, make_rule
from pabee.options import ENGINE_STEPS, LEARNS_TO_EXIT, check_runtime

OWN_DATA_FILES = {"train": "train_file", "dev": "validation_file", "test": "test_file"}


def parse_settings(text, rule, flag):
    """A comma list of the criterion's settings, each of its type and within its bounds."""
    pattern = r"\d+" if rule.setting_type is int else r"\d+(\.\d*)?|\.\d+"
    parts = [part.strip() for part in str(text).split(",")]

    def valid(part):
        value = rule.setting_type(part)
        return value >= rule.min_setting and (rule.max_setting is None or value <= rule.max_setting)

    if not all(re.fullmatch(pattern, part) and valid(part) for part in parts):
        kind = "integers" if rule.setting_type is int else "numbers"
        bounds = f">= {rule.min_setting}" if rule.max_setting is None else f"from {rule.min_setting} to {rule.max_setting}"
        raise UsageError(f"bad {flag} '{text}': give a comma list of {kind} {bounds}, e.g. {rule.example}")
    return tuple(rule.setting_type(part) for part in parts)


@dataclass(frozen=True)
class ExitSettings:
    """The exit criterion and the settings every evaluation reports. Patience settings come from
    `patience`, the other criteria's from `thresholds` (text, as the flags give them)."""

    criterion: str = "patience"
    settings: tuple = (0,)
    regression_threshold: float = 0.0

    @classmethod
    def parse(cls, criterion="patience", patience="0", thresholds="", regression_threshold=0.0):
        """Patience settings from `patience`; a threshold rule's from `thresholds`; a rule that
        counts layers (uses_patience) pairs every patience with every threshold: "2_0.05"."""
        rule = RULES[criterion]
        patience_values = parse_settings(patience, PatienceRule, "--patience")
        if criterion == "patience":
            if thresholds:
                raise UsageError("--exit_thresholds is for the baseline criteria and the later methods: give patience values with --patience")
            return cls(criterion, patience_values, regression_threshold)
        if not thresholds:
            raise UsageError(f"--exit_criterion {criterion} needs --exit_thresholds, e.g. {rule.example}")
        values = parse_settings(thresholds, rule, "--exit_thresholds")
        if rule.uses_patience:
            values = tuple(f"{p}_{t:g}" for p in patience_values for t in values)
        return cls(criterion, values, regression_threshold)

    def rule(self, setting):
        return make_rule(self.criterion, setting, self.regression_threshold)

    def check_task(self, is_regression, name):
        """Criteria that read class probabilities have none on a regression task (`name`)."""
        if RULES[self.criterion].needs_probabilities and is_regression:
            raise UsageError(f"--exit_criterion {self.criterion} needs class probabilities and "
                             f"{name} is a regression task: use patience or fixed")

    def check_learned_exit(self, exit_training):
        """Learning to exit reads a head that only models trained to learn it have."""
        if RULES[self.criterion].needs_uncertainty and exit_training not in LEARNS_TO_EXIT:
            raise UsageError(f"--exit_criterion {self.criterion} needs a model trained with --exit_training "
                             f"{' or '.join(LEARNS_TO_EXIT)} (BERxiT's learning-to-exit head); this one was trained "
                             f"with {exit_training}")

    def check_depth(self, depth):
        if self.criterion == "fixed" and max(self.settings) > depth:
            raise UsageError(f"--exit_thresholds {','.join(map(str, self.settings))}: fixed exit layer "
                             f"{max(self.settings)} is beyond the model's {depth} layers: give layers from 1 to {depth}")


@dataclass(frozen=True)
class ModelSettings:
    """The model to load: backbone, weights, config, tokenizer, and what its heads read."""

    model_type: str = "bert"
    model_name_or_path: str = ""
    config_name: str = ""
    tokenizer_name: str = ""
    do_lower_case: bool = False
    exit_pooling: str | None = None  # None: the model's own setting, else first


@dataclass(frozen=True)
class ExitChoice:
    """Where the chosen exit (predict.py's default setting) is chosen: on dev ("dev", the rows of
    the run's dev figures, which then flatter that setting), on `percentage`% of the training rows
    held out of training ("train", seeded by --seed), or on a file laid out as the dev data ("file",
    `path`). --choose_exit_on dev | train:P | <file>."""

    where: str = "dev"
    percentage: float = 0.0
    path: str | None = None

    @classmethod
    def parse(cls, text):
        if text == "dev":
            return cls()
        if text.startswith("train:"):
            try:
                percentage = float(text[len("train:"):])
            except ValueError:
                percentage = math.nan
            if not 0 < percentage < 100:
                raise UsageError(f"--choose_exit_on {text}: give train:P with a percentage 0 < P < 100, e.g. train:10")
            return cls("train", percentage)
        return cls("file", path=text)

    def describe(self, rows, seed):
        if self.where == "train":
            return f"{self.percentage:g}% of the training rows held out of training ({rows} rows, seed {seed})"
        return f"{self.path} ({rows} rows)" if self.where == "file" else f"dev ({rows} rows)"


@dataclass(frozen=True)
class DataSettings:
    """Where examples come from (a GLUE task, or own files or a hub dataset) and how they become
    features."""

    task_name: str | None = None
    data_dir: str | None = None  # GLUE TSV folder; None: GLUE from the hub
    max_seq_length: int = 128
    overwrite_cache: bool = False
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_columns: str | None = None
    label_column: str | None = None
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    validation_split_percentage: float = 0.0
    task_type: str | None = None
    metric_for_table: str | None = None
    tsv_quoting: bool = False  # .tsv files: quotes as CSV reads them (fields may hold tabs and newlines)
    skip_unlabeled_rows: bool = False  # training and validation rows without a label: left out, not an error
    choose_exit_on: ExitChoice = field(default_factory=ExitChoice)

    @property
    def own(self):
        """Own files or a hub dataset instead of GLUE."""
        return bool(self.dataset_name or self.own_files())

    def own_files(self):
        """{split: path} of the own data files given."""
        return {split: getattr(self, name) for split, name in OWN_DATA_FILES.items() if getattr(self, name)}


@dataclass(frozen=True)
class TrainingSettings:
    """How the model is fine-tuned: the regime, the optimizer and schedule, logging and saving."""

    exit_training: str = "pabee"
    head_bias_init: str = "zero"
    distill_temperature: float = 1.0
    num_hidden_layers: int = 0  # 0: every layer
    second_stage_steps: int = 0  # 0: as many as the first stage
    per_gpu_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0: overrides num_train_epochs
    warmup_steps: int = 0
    logging_steps: int = 500
    save_steps: int = 500
    evaluate_during_training: bool = False


def parse_buckets(text, flag):
    """The exit engine's buckets as engine.Shapes.of takes them: "auto" (fixed buckets on a GPU,
    exact sizes on the CPU), None for "exact" (every size its own bucket), else the sizes."""
    if text in ("auto", "exact"):
        return None if text == "exact" else text
    parts = [part.strip() for part in str(text).split(",")]
    if not all(re.fullmatch(r"\d+", part) and int(part) >= 1 for part in parts):
        raise UsageError(f"bad {flag} '{text}': give auto, exact or a comma list of sizes >= 1, e.g. 1,8,32,64")
    return tuple(sorted({int(part) for part in parts}))


@dataclass(frozen=True)
class EvalSettings:
    per_gpu_eval_batch_size: int = 8
    eval_all_checkpoints: bool = False
    timed_inference: bool = False
    timing_repeats: int = 3
    row_buckets: str = "auto"  # the exit engine's call shapes (parse_buckets)
    length_buckets: str = "auto"
    engine_step: str = "auto"  # options.ENGINE_STEPS
    runtime: str = "torch"  # options.RUNTIMES
    quantize: str = "none"  # options.QUANTIZE

    def __post_init__(self):
        self.buckets  # checked at once
        if self.engine_step not in ENGINE_STEPS:
            raise UsageError(f"--engine_step {self.engine_step}: give one of {', '.join(ENGINE_STEPS)}")
        check_runtime(self.runtime, self.quantize)

    @property
    def buckets(self):
        """(row buckets, length buckets) for engine.Shapes.of."""
        return parse_buckets(self.row_buckets, "--row_buckets"), parse_buckets(self.length_buckets, "--length_buckets")

    @property
    def repeats(self):
        """Rounds of timing per setting; 0 when nothing is timed."""
        return self.timing_repeats if self.timed_inference else 0


@dataclass(frozen=True)
class DeviceSettings:
    no_cuda: bool = False
    fp16: bool = False
    bf16: bool = False
    local_rank: int = -1  # set by the launcher; torchrun's LOCAL_RANK wins


@dataclass(frozen=True)
class RunSettings:
    """One run of run_glue: what to load, train, evaluate and write where. `training` is None
    when the run does not train."""

    output_dir: str
    model: ModelSettings
    data: DataSettings = field(default_factory=DataSettings)
    exits: ExitSettings = field(default_factory=ExitSettings)
    training: TrainingSettings | None = None
    do_eval: bool = False
    do_predict: bool = False
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    device: DeviceSettings = field(default_factory=DeviceSettings)
    seed: int = 42
    cache_dir: str | None = None
    overwrite_output_dir: bool = False

    def __post_init__(self):
        if not (self.training or self.do_eval or self.do_predict):
            raise UsageError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
        if self.device.fp16 and self.device.bf16:
            raise UsageError("--fp16 and --bf16 exclude each other: choose one")

    def wanted_splits(self):
        """The splits the run reads: train to train, dev to evaluate, test to predict."""
        dev = self.do_eval or bool(self.training and self.training.evaluate_during_training)
        calibration = self.do_eval and self.data.choose_exit_on.where != "dev"
        return tuple(s for s, wanted in (("train", self.training), ("dev", dev), ("calibration", calibration),
                                         ("test", self.do_predict)) if wanted)

    def record(self):
        """The run's settings as JSON (training_args.json, beside the model and in checkpoints)."""
        return asdict(self)


@dataclass(frozen=True)
class ExitPlan:
    """The task trained on, the tasks evaluated (MNLI: matched and mismatched), and the exit
    settings every evaluation reports; made once a run knows its task."""

    task: object  # glue.Task
    eval_tasks: tuple
    exits: ExitSettings

    @classmethod
    def of(cls, exits, source):
        exits.check_task(source.task.is_regression, source.task.folder)
        return cls(source.task, source.eval_tasks, exits)

    @property
    def criterion(self):
        return self.exits.criterion

    @property
    def settings(self):
        return self.exits.settings

    def rule(self, setting):
        return self.exits.rule(setting)


@dataclass(frozen=True)
class ReproduceSettings:
    """The paper's table (reproduce_paper.py): the backbone and tasks, the grid of learning rates,
    batch sizes and seeds, the training length, and the exit settings evaluated on dev."""

    backbone: str
    tasks: tuple
    glue_dir: str
    output_dir: str
    model_name_or_path: str
    learning_rates: tuple = ("1e-5", "2e-5", "3e-5", "5e-5")  # as given: they name the run folders
    batch_sizes: tuple = (16, 32, 128)
    seeds: int = 5
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0: steps per run (and per second stage) instead of epochs
    max_seq_length: int = 128
    k_layers: int = 0  # 0: half the model's layers
    tolerance: float = 0.01
    regression_threshold: float = 0.1
    entropy_thresholds: str = "0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.8,1.0"
    confidence_thresholds: str = "0.5,0.6,0.7,0.8,0.9,0.95,0.99"
    divergence_thresholds: str = "0.001,0.003,0.01,0.03,0.1,0.3"  # F-PABEE's, with patience 1, 2, 3
    lte_thresholds: str = "0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7"  # BERxiT-LTE's
    energy_thresholds: str = "0.02,0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7"  # COSEE's normalized energy (label-prior heads start at 1/2)
    choose_exit_on: ExitChoice = ExitChoice("train", 10.0)  # where the table's settings are chosen: not on dev
    methods: tuple = ()  # the method names to compare (pabee.paper.ALL_METHODS); none: the paper's table
    per_gpu_eval_batch_size: int = 64
    exit_pooling: str | None = None
    do_lower_case: bool = False


@dataclass(frozen=True)
class SlurmSettings:
    """What each run of a grid asks of Slurm (--launcher slurm): one array task per run."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 24 * 60
    gpus: int = 1
    cpus: int = 4
    array_parallelism: int = 0  # runs at once over all arrays; 0: as many as Slurm gives
    max_array_size: int = 0  # 0: the cluster's MaxArraySize


@dataclass(frozen=True)
class LaunchSettings:
    """How a grid's independent runs are spread (pabee.grid): a local Ray or a Ray cluster (one run
    per GPU, else `workers` runs at a time), Slurm job arrays, or one after the other in this process
    (local). A run whose worker or node dies is retried `retries` times, resuming its checkpoint."""

    launcher: str = "ray"
    workers: int = 0  # runs at a time on each machine without GPUs; 0: one
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray started for the grid
    retries: int = 2
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
