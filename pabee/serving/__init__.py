"""A trained run served over HTTP (serve.py): requests' examples join the one exit-engine stream of
the process (pabee/early_exit/engine.py's open feed), so a row an exit frees is taken at the next
layer call by whichever example waits, and each request is answered as soon as its last example
exits; or, for comparison, request-level batching (each batch run to its end). Its settings, the
engine's thread, the HTTP app with its health and Prometheus metrics, and the server's life."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"serve": "server", "ServeSettings": "settings"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
