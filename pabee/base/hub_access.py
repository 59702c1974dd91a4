"""Whether something that must come from the Hugging Face hub can: answered at once (offline
settings, or the hub not answering within 3 s) instead of after half a minute of retries. Every
entry point asks through here."""

import os
import socket


def hub_unavailable(name, kind="model", cache_dir=None):
    """Why `name` (a model, or with kind "datasets" a dataset) cannot come from the hub, or None
    when it can (or is in the local cache)."""
    from huggingface_hub import constants

    if kind == "datasets":
        if constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
            return None  # datasets answers from its cache, or says at once that it cannot
        if hub_answers(constants.ENDPOINT):
            return None
        return f"{constants.ENDPOINT} cannot be reached (set HF_DATASETS_OFFLINE=1 to use a copy in the datasets cache)"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str):
        return None
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and it is not in the local cache"
    if not hub_answers(constants.ENDPOINT):
        return f"{constants.ENDPOINT} cannot be reached and it is not in the local cache"
    return None


def hub_answers(endpoint, timeout=3.0):
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True
