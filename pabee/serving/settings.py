"""What serve.py is asked to do, decided once from its flags, as frozen settings."""

from dataclasses import dataclass

from pabee.base.errors import UsageError
from pabee.early_exit.exit_settings import ExitSettings

BATCHING = ("stream", "request")  # one open stream refilled row by row; or each batch run to its end


@dataclass(frozen=True)
class ServeSettings:
    """The run served, its exit, where it listens, and the engine's and the HTTP limits."""

    model_dir: str
    exits: ExitSettings
    why: str  # why this exit: asked, or chosen from the run's results
    host: str = "127.0.0.1"
    port: int = 8000
    runtime: str = "torch"
    quantize: str = "none"
    batch_size: int = 32  # rows of a layer call
    max_queue: int = 1024  # examples waiting to join the engine; past it a request is refused (429)
    max_seq_length: int | None = None  # None: the training run's
    timeout: float = 30.0  # seconds a request may wait to start; after it, 503
    batching: str = "stream"
    batch_wait: float = 0.01  # request batching: the longest wait to gather a batch (Ray Serve's default)
    threads: int = 1  # torch's threads in the engine
    max_texts: int = 256  # texts a request may hold
    max_body_bytes: int = 1 << 20  # a larger body is refused (413)

    def __post_init__(self):
        if min(self.batch_size, self.max_queue, self.threads, self.max_texts, self.max_body_bytes) < 1:
            raise UsageError("--batch_size, --max_queue, --threads, --max_texts and --max_body_bytes must be >= 1")
        if self.timeout <= 0 or self.batch_wait < 0 or not 0 <= self.port < 65536:
            raise UsageError("--timeout must be > 0, --batch_wait >= 0 and --port within 0-65535")
        if self.batching not in BATCHING:
            raise UsageError(f"--batching {self.batching}: give one of {', '.join(BATCHING)}")
        if self.max_queue < self.max_texts:
            raise UsageError(f"--max_queue {self.max_queue} is below --max_texts {self.max_texts}: a request that "
                             "large could never be queued; raise --max_queue")
