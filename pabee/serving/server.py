"""A server's life: its port taken first (a port in use is one line, before the model loads), the
model loaded, the engine's thread started, uvicorn serving the app until SIGTERM or Ctrl-C; then
readiness turns 503 at once, no new connection is taken, the requests already accepted are
answered, and the process ends with exit code 0."""

import os
import signal
import socket
import sys

import uvicorn

from pabee.base.errors import UsageError

GRACE = 30  # seconds the requests already accepted have to be answered after a stop


def serve(settings):
    """Serves `settings` (ServeSettings) until stopped."""
    from pabee.deploy.predictor import Predictor
    from pabee.serving.app import make_app
    from pabee.serving.feed import Feed
    from pabee.serving.metrics import Metrics

    listening = bound(settings.host, settings.port)
    predictor = Predictor.load(settings.model_dir, settings.exits, settings.max_seq_length,
                               batch_size=settings.batch_size, runtime=settings.runtime, quantize=settings.quantize)
    metrics, state = Metrics(settings.batch_size), {"ready": False}
    feed = Feed(predictor, settings, metrics)
    server = Server(uvicorn.Config(make_app(feed, settings, metrics, state), log_level="warning", lifespan="off",
                                   timeout_graceful_shutdown=GRACE), state)
    for stop in (signal.SIGTERM, signal.SIGINT):  # a stop before uvicorn listens for its own, or handed back after
        signal.signal(stop, server.handle_exit)
    feed.start()
    state["ready"] = True
    host, port = listening.getsockname()[:2]
    print(f"serve.py: answering on http://{host}:{port}/predict ({settings.exits.criterion} "
          f"{settings.exits.settings[0]}: {settings.why}; {settings.batching} batching, batch size "
          f"{settings.batch_size}; API at /docs)", file=sys.stderr, flush=True)
    server.run(sockets=[listening])
    feed.close(GRACE)


def bound(host, port):
    """A listening socket on host:port, or one line saying why not."""
    try:
        return socket.create_server((host, port), backlog=2048)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({os.strerror(e.errno) if e.errno else e}): give another --port or --host, "
                         "or stop what listens there") from None


class Server(uvicorn.Server):
    """uvicorn's server, whose readiness turns 503 the moment it is told to stop."""

    def __init__(self, config, state):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig, frame):
        self.state["ready"] = False
        super().handle_exit(sig, frame)
