"""Serve a fine-tuned PABEE model over HTTP, each example exiting at its own layer.

    python serve.py --model_dir DIR [--patience P | --exit_criterion C --exit_thresholds T] [--port 8000]
    curl -s localhost:8000/predict -d '{"texts": ["a gripping film", ["text a", "text b"]]}'

Every request's examples join one exit-engine stream: a row freed by an exit is taken at the next
layer call by the next waiting example, whichever request it came from, and a request is answered as
soon as its last example exits. Answers, in the texts' order, are predict.py's: the label, its
probability (regression: the value) and the exit layer. The exit, by default, is the one chosen from
the run's results, as predict.py's. GET /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI).
SIGTERM or Ctrl-C: readiness turns 503, accepted requests are answered, exit code 0.
Bad flags or a port in use: one line on stderr, exit code 2.
"""

import argparse
import sys
from pathlib import Path

from pabee.base.choices import QUANTIZE, RUNTIMES, check_runtime
from pabee.base.cli import OneDefault
from pabee.base.errors import UsageError, os_error_line
from predict import add_exit_flags, exit_settings


def build_parser():
    p = argparse.ArgumentParser(prog="serve.py", description=__doc__.splitlines()[0], formatter_class=OneDefault)
    add = p.add_argument
    add("--model_dir", required=True, help="A folder run_glue.py trained (or any of its checkpoint-N).")
    add_exit_flags(add)
    add("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
    add("--port", type=int, default=8000, help="Port to listen on.")
    add("--runtime", choices=RUNTIMES, default="torch", help="Run the layers on torch, or on ONNX Runtime (CPU), "
        "as predict.py.")
    add("--quantize", choices=QUANTIZE, default="none", help="With --runtime onnxruntime: int8 layer graphs.")
    add("--batch_size", type=int, default=32, help="Most rows a layer call of the exit engine runs.")
    add("--batching", choices=["stream", "request"], default="stream", help="stream: one engine stream refilled row "
        "by row across requests; request: request-level dynamic batching (gather up to --batch_size examples or "
        "--batch_wait seconds, run that batch to its end, then the next), for comparison.")
    add("--batch_wait", type=float, default=0.01, help="With --batching request: the longest wait to fill a batch.")
    add("--max_queue", type=int, default=1024, help="Examples that may wait to join the engine; past it, 429.")
    add("--max_texts", type=int, default=256, help="Texts one request may hold; past it, 413.")
    add("--max_body_bytes", type=int, default=1 << 20, help="Largest request body in bytes; past it, 413.")
    add("--timeout", type=float, default=30.0, help="Seconds a request may wait to start; past it, 503.")
    add("--max_seq_length", type=int, default=None, help="Longest input in tokens (default: the training run's).")
    add("--threads", type=int, default=1, help="torch's threads in the engine.")
    return p


def main(argv=None):
    flags = build_parser().parse_args(argv)
    try:
        if not (Path(flags.model_dir) / "config.json").is_file():
            raise UsageError(f"--model_dir {flags.model_dir} holds no config.json: give a folder run_glue.py wrote")
        if flags.max_seq_length is not None and flags.max_seq_length < 1:
            raise UsageError("--max_seq_length must be >= 1")
        check_runtime(flags.runtime, flags.quantize)
        from pabee.base.logs import setup_logging
        from pabee.serving.server import serve
        from pabee.serving.settings import ServeSettings

        exits, why = exit_settings(flags)
        settings = ServeSettings(flags.model_dir, exits, why, **{
            name: getattr(flags, name) for name in ("host", "port", "runtime", "quantize", "batch_size", "max_queue",
                                                    "max_seq_length", "timeout", "batching", "batch_wait", "threads",
                                                    "max_texts", "max_body_bytes")})
        setup_logging()
        serve(settings)
    except UsageError as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"serve.py: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
