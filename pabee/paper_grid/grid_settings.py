"""What reproduce_paper.py is asked to do, as frozen settings: the grid of the paper's table, and
how its jobs are launched (locally, on Ray, or on Slurm with its own settings)."""

from dataclasses import dataclass, field

from pabee.data.data_settings import ExitChoice


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
    methods: tuple = ()  # the method names to compare (pabee.paper_grid.paper_table.ALL_METHODS); none: the paper's table
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
    """How a grid's independent runs are spread (pabee.paper_grid.driver): a local Ray or a Ray cluster (one run
    per GPU, else `workers` runs at a time), Slurm job arrays, or one after the other in this process
    (local). A run whose worker or node dies is retried `retries` times, resuming its checkpoint."""

    launcher: str = "ray"
    workers: int = 0  # runs at a time on each machine without GPUs; 0: one
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray started for the grid
    retries: int = 2
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
