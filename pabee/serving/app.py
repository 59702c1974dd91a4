"""The HTTP face of a server (FastAPI): POST /predict, GET /healthz, /readyz and /metrics, and
FastAPI's own OpenAPI page (/docs). A bad request gets a 4xx whose body is one line naming the
problem ({"error": ...}); it never reaches the engine, so it never fails or delays another."""

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pabee.deploy.prediction_output import answer_fields
from pabee.serving.feed import Refused
from pabee.serving.feed import Request as Pending


def make_app(feed, settings, metrics, state):
    """The app over `feed`; `state` says whether the model is loaded and the server not draining."""
    app = FastAPI(title="PABEE early exit", summary=f"{settings.model_dir}: {settings.exits.criterion} "
                  f"{settings.exits.settings[0]} ({settings.why})")
    regression = feed.predictor.model.config.num_labels == 1

    @app.post("/predict")
    async def predict(request: Request):
        """{"texts": ["a text", ["text a", "text b"], ...]} -> {"answers": [{"label", "probability",
        "exit_layer"} (regression: "value", "exit_layer"), ...]} in the texts' order."""
        start = time.monotonic()
        try:
            texts = parsed(await body_of(request, settings.max_body_bytes), settings.max_texts)
            future = asyncio.get_running_loop().create_future()
            feed.submit(Pending(texts, asyncio.get_running_loop(), future))
            answers = await future
            if isinstance(answers, Refused):
                raise answers
        except Refused as e:
            metrics.requests.labels(str(e.status)).inc()
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
            return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)
        metrics.requests.labels("200").inc()
        metrics.latency.observe(time.monotonic() - start)
        return {"answers": [shown(answer, regression) for answer in answers]}

    @app.get("/healthz")
    async def healthz():
        if feed.failed:
            return JSONResponse({"status": feed.failed}, status_code=503)
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        if feed.failed or not state.get("ready"):
            return JSONResponse({"status": feed.failed or "not ready"}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics_page():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def body_of(request, limit):
    """The body's bytes, refused (413) past `limit` without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is {int(declared)} bytes, over the {limit} this server takes (--max_body_bytes)")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise Refused(413, f"the body is over the {limit} bytes this server takes (--max_body_bytes)")
    return bytes(body)


def parsed(body, most):
    """The (text_a, text_b or None) pairs of a request body, or Refused(400) naming what is wrong."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Refused(400, f"the body is not UTF-8 (byte {e.start}): send JSON text") from None
    except json.JSONDecodeError as e:
        raise Refused(400, f"the body is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an integer past Python's digit limit, nesting past its stack
        raise Refused(400, f"the body is JSON this server does not read ({type(e).__name__}): send texts") from None
    if not isinstance(value, dict) or set(value) != {"texts"} or not isinstance(value["texts"], list):
        raise Refused(400, 'send {"texts": [...]}: a list of texts, or of [text_a, text_b] pairs')
    texts = value["texts"]
    if not texts or len(texts) > most:
        raise Refused(413 if texts else 400, f"give 1 to {most} texts (--max_texts), not {len(texts)}")
    for k, text in enumerate(texts):
        if not (isinstance(text, str) or isinstance(text, list) and len(text) == 2 and all(
                isinstance(t, str) for t in text)):
            raise Refused(400, f"texts[{k}] is {json.dumps(text)[:40]}: give a string or a [text_a, text_b] pair")
        try:
            json.dumps(text, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Refused(400, f"texts[{k}] holds an unpaired surrogate escape (\\ud800-\\udfff): send valid "
                               "Unicode") from None
    return [(t, None) if isinstance(t, str) else (t[0], t[1]) for t in texts]


def shown(answer, regression):
    label, probability, layer = answer
    return {**answer_fields(label, probability, regression), "exit_layer": layer}
