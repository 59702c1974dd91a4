"""serve.py as a user starts it: a real uvicorn server over HTTP on loopback, fed by many concurrent
clients. Its answers are predict.py's on the same texts and exit (labels and exit layers equal,
probabilities within 1e-5) whatever the concurrency and arrival order, in the engine's one stream
and with request-level batching; health, readiness, metrics and the OpenAPI page answer; a bad
request gets a 4xx with one line and leaves the others alone; SIGTERM answers what was accepted and
exits 0; a port in use is one line and exit code 2."""

import http.client
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import predict
import run_glue

ROOT = Path(__file__).resolve().parents[1]
STARTED = re.compile(r"answering on http://([\d.]+):(\d+)/predict")


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    """A tiny BERT trained on the synthetic RTE (sentence pairs, named labels) long enough that its
    examples exit at several layers."""
    out = tmp_path_factory.mktemp("serving") / "rte"
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--task_name", "RTE",
                          "--data_dir", str(world / "glue" / "RTE"), "--output_dir", str(out), "--do_train",
                          "--do_eval", "--do_lower_case", "--per_gpu_train_batch_size", "16", "--learning_rate",
                          "3e-3", "--max_steps", "8", "--save_steps", "1000", "--patience", "0,1,2,3",
                          "--seed", "7"]) == 0
    return out


@pytest.fixture(scope="module")
def exits(run, texts):
    """An entropy exit at the 55th percentile of the run's own entropies over dev and layers, so that examples
    leave at several layers (this tiny model's heads agree at once: patience would not spread them)."""
    import torch

    from pabee.modeling.backbones import backbone_of_folder, load_model, load_tokenizer

    backbone = backbone_of_folder(run)
    model, tokenizer = load_model(backbone, str(run), None, "cpu")[0].eval(), load_tokenizer(backbone, str(run))
    batch = tokenizer([a for a, _ in texts], [b for _, b in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**batch, output_all_layer_logits=True).all_layer_logits.softmax(-1)
    entropy = -(probabilities * probabilities.log()).sum(-1)
    return ["--exit_criterion", "entropy", "--exit_thresholds", f"{float(entropy.quantile(0.55)):.6f}"]


@pytest.fixture(scope="module")
def texts(world):
    rows = [line.split("\t") for line in (world / "glue" / "RTE" / "dev.tsv").read_text().splitlines()[1:]]
    return [(a, b) for _, a, b, _ in rows]


class Server:
    """serve.py in its own process on a free port, until stopped."""

    def __init__(self, folder, *extra):
        self.process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--model_dir", str(folder), "--port",
                                         "0", *extra], stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines = []
        for line in self.process.stderr:
            self.lines.append(line)
            if found := STARTED.search(line):
                self.host, self.port = found.group(1), int(found.group(2))
                break
        else:
            raise AssertionError("serve.py ended before it listened: " + "".join(self.lines)[-2000:])
        threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True).start()

    def call(self, method, path, body=None, headers=None):
        """(status, headers, parsed or raw body) of one request on its own connection."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        kind = response.getheader("content-type", "")
        return response.status, dict(response.getheaders()), json.loads(raw) if "json" in kind else raw.decode()

    def predict(self, texts):
        return self.call("POST", "/predict", json.dumps({"texts": texts}), {"content-type": "application/json"})

    def stop(self, sig=signal.SIGTERM):
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def predicted(folder, texts, tmp_path, *exits):
    """predict.py's answers (JSON lines) on `texts`, pairs as tab-separated lines."""
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("".join(f"{a}\t{b}\n" for a, b in texts))
    assert predict.main(["--model_dir", str(folder), "--input", str(source), "--output", str(out), *exits]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("batching", ["stream", "request"])
def test_concurrent_clients_get_predict_pys_answers_whatever_the_arrival_order(batching, run, texts, exits, tmp_path):
    expected = predicted(run, texts, tmp_path, *exits)
    assert len({row["exit_layer"] for row in expected}) >= 2, "the run should exit at several layers"
    server = Server(run, *exits, "--batch_size", "4", "--batching", batching)
    try:
        draw, order, requests = random.Random(3), list(range(len(texts))), []
        draw.shuffle(order)
        while order:  # requests of 1 to 4 texts, in a drawn order, some texts as pairs and asked twice
            size = draw.randint(1, 4)
            requests.append(order[:size])
            order = order[size:]
        requests += [draw.sample(range(len(texts)), 3) for _ in range(6)]
        with ThreadPoolExecutor(16) as clients:
            replies = list(clients.map(lambda ids: server.predict([list(texts[i]) for i in ids]), requests))
        for ids, (status, _, body) in zip(requests, replies, strict=True):
            assert status == 200, body
            for i, got in zip(ids, body["answers"], strict=True):
                want = expected[i]
                assert got["label"] == want["label"] and got["exit_layer"] == want["exit_layer"], (i, got, want)
                assert abs(got["probability"] - want["probability"]) < 1e-5
        status, _, metrics = server.call("GET", "/metrics")
        assert status == 200 and f'pabee_requests_total{{status="200"}} {float(len(requests))}' in metrics
        calls = re.search(r"pabee_rows_per_layer_call_count (\S+)", metrics)
        assert calls and float(calls.group(1)) > 0
    finally:
        assert server.stop() == 0


def test_health_readiness_openapi_and_bad_requests_each_answered_in_one_line(run, texts):
    server = Server(run, "--patience", "1", "--max_texts", "8", "--max_body_bytes", "20000")
    try:
        assert server.call("GET", "/healthz")[:3:2] == (200, {"status": "alive"})
        assert server.call("GET", "/readyz")[:3:2] == (200, {"status": "ready"})
        status, _, page = server.call("GET", "/openapi.json")
        assert status == 200 and "/predict" in page["paths"]
        bad = [(b"not json", 400, "not JSON"), (b'{"text": ["a"]}', 400, '{"texts": [...]}'),
               (b'{"texts": []}', 400, "give 1 to 8 texts"), (b'{"texts": [3]}', 400, "texts[0] is 3"),
               (b'{"texts": [["a", "b", "c"]]}', 400, "texts[0]"), (b'{"texts": ["\xff\xfe"]}', 400, "not UTF-8"),
               (b'{"texts": ["\\ud800"]}', 400, "surrogate"), (json.dumps({"texts": ["a"] * 9}).encode(), 413, "not 9"),
               (json.dumps({"texts": ["a" * 30000]}).encode(), 413, "--max_body_bytes"),
               (b'{"texts": [' + b"9" * 5000 + b"]}", 400, "does not read"), (b"[" * 15000, 400, "does not read")]
        with ThreadPoolExecutor(8) as clients:  # the bad ones among good ones: every good one answered
            good = [clients.submit(server.predict, [list(texts[i])]) for i in range(12)]
            for body, status, said in bad:
                got, _, reply = server.call("POST", "/predict", body, {"content-type": "application/json"})
                assert got == status and said in reply["error"] and "\n" not in reply["error"], (body[:30], reply)
            assert all(f.result()[0] == 200 for f in good)
    finally:
        assert server.stop() == 0


def test_a_stopped_server_answers_what_it_accepted_and_a_taken_port_is_one_line(run, texts):
    server = Server(run, "--patience", "1", "--batch_size", "2")
    taken = subprocess.run([sys.executable, str(ROOT / "serve.py"), "--model_dir", str(run), "--port", str(server.port)],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1 and "cannot listen" in taken.stderr

    def ask(i):
        try:
            return server.predict([list(t) for t in texts[i:i + 4]])
        except ConnectionError:  # came after the stop (refused, or reset in the kernel's backlog): never accepted
            return None

    with ThreadPoolExecutor(8) as clients:
        replies = [clients.submit(ask, i) for i in range(0, 40, 4)]
        time.sleep(0.05)
        assert server.stop(signal.SIGTERM) == 0
    answered = [r.result() for r in replies if r.result() is not None]
    assert answered and all(status == 200 and len(body["answers"]) == 4 for status, _, body in answered)
