"""What a run is asked to do, decided once (from the flags by run_glue.py, or built by a script such
as reproduce_paper.py or demo.py) and never changed after: frozen settings that cross every module
boundary instead of the parsed flags. Field names are the flags' names and their defaults are the
flags' defaults (run_glue.py reads them from here). No torch here: flags are checked at once."""

from dataclasses import asdict, dataclass, field

from pabee.base.choices import ENGINE_STEPS, check_runtime
from pabee.base.errors import UsageError
from pabee.data.data_settings import DataSettings
from pabee.early_exit.exit_settings import ExitSettings, parse_buckets


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


@dataclass(frozen=True)
class EvalSettings:
    per_gpu_eval_batch_size: int = 8
    eval_all_checkpoints: bool = False
    timed_inference: bool = False
    timing_repeats: int = 3
    row_buckets: str = "auto"  # the exit engine's call shapes (parse_buckets)
    length_buckets: str = "auto"
    engine_step: str = "auto"  # base.choices.ENGINE_STEPS
    runtime: str = "torch"  # base.choices.RUNTIMES
    quantize: str = "none"  # base.choices.QUANTIZE

    def __post_init__(self):
        _ = self.buckets  # parsed at once: a bad --row_buckets or --length_buckets raises UsageError here
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
