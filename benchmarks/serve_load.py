"""serve.py under open-loop load: early exit in one stream against full depth and against
request-level batching, at three latency SLOs.

    .venv/bin/python benchmarks/serve_load.py --model_dir RUN --json benchmarks/results/serve_cpu.json

Three servers, started here on loopback, each with one torch thread pinned to one core (the load
generator runs on another): serve.py at the run's chosen exit, the same at full depth (--patience 0),
and the same exit with request-level batching (--batching request: a batch gathered, run to its end,
then the next; Ray Serve's @serve.batch policy). Requests of 1 to 4 SST-2 dev sentences arrive as a
seeded Poisson process (--requests of them per server and rate); each request's latency runs from its
scheduled send time, so a server that falls behind cannot hide its queue. The arrival rate rises in steps of a tenth of full depth's
sustained rate (measured first, closed loop), the servers taking turns at each rate, until every
server's p99 is past the largest SLO. Reported per server and SLO (50, 100, 200 ms): the highest rate
up to which every rate kept p99 under the SLO with nothing refused; p50 and p99 at every rate.

Keys: serve_rate_over_full and serve_rate_over_batching (each the smallest over the SLOs),
serve_p50_ratio (p50 at the exit over full depth's at a tenth of full depth's rate), ideal_speed_up
(layers / mean exit layer of the answers), rate_<server>_<slo>ms, and `steps`.
"""

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from workload import SST2_DEV, sentences  # noqa: E402

SLOS = (0.05, 0.1, 0.2)
MS = [int(slo * 1000) for slo in SLOS]
ONLY_OURS = "only early exit met it"
SERVERS = ("exit", "full", "batching")
STARTED = re.compile(r"answering on http://([\d.]+):(\d+)/predict")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", default=None, help="A folder run_glue.py wrote (docs/performance.md names one).")
    p.add_argument("--requests", type=int, default=150, help="Requests per server and rate (p99: the second slowest).")
    p.add_argument("--batch_size", type=int, default=32, help="The servers' --batch_size.")
    p.add_argument("--smoke", action="store_true", help="A tiny model, short windows, two rates: seconds.")
    p.add_argument("--json", default=None, help="Also write the figures here as JSON.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.smoke and not args.model_dir:
        p.error("give --model_dir (a run_glue output folder) or --smoke")
    cores = sorted(os.sched_getaffinity(0))
    server_core, load_core = cores[0], cores[-1]
    texts = sentences(SST2_DEV)[0]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        folder, exit_flags = (tiny_run(Path(tmp), texts) if args.smoke else (args.model_dir, []))
        servers = {name: Server(folder, server_core, args.batch_size, *flags) for name, flags in
                   (("exit", exit_flags), ("full", ["--patience", "0"]), ("batching", [*exit_flags, "--batching",
                                                                                       "request"]))}
        os.sched_setaffinity(0, {load_core})
        try:
            figures = measured(servers, texts, args, folder)
        finally:
            for server in servers.values():
                server.stop()
    figures.update(device=f"cpu, servers on core {server_core} (1 thread each), load on core {load_core}",
                   model="tiny 3-layer BERT (smoke run: no figure to read)" if args.smoke else args.model_dir,
                   requests_per_step=12 if args.smoke else args.requests, batch_size=args.batch_size,
                   date=time.strftime("%Y-%m-%d"))
    print(markdown(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def measured(servers, texts, args, folder):
    layers = json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"]
    draw = random.Random(args.seed)
    full_rate = closed_loop_rate(servers["full"], texts, draw, 0.5 if args.smoke else 4.0)
    step, steps, done = full_rate / 10, [], set()
    for k in range(1, 3 if args.smoke else 200):
        rate = step * k
        row = {"rate": rate}
        for name in draw.sample(SERVERS, len(SERVERS)):  # taking turns, in a drawn order
            if name not in done:
                row[name] = window(servers[name], texts, rate, 12 if args.smoke else args.requests, draw)
                done |= {name} if row[name]["p99"] > 2 * SLOS[-1] or row[name]["refused"] else set()
        steps.append(row)
        if done == set(SERVERS):
            break
    exits = [e for row in steps for e in row.get("exit", {}).get("exit_layers", [])]
    figures = {"ideal_speed_up": layers / statistics.mean(exits), "full_depth_closed_loop_rate": full_rate,
               "steps": [{k: ({m: v for m, v in r.items() if m != "exit_layers"} if isinstance(r, dict) else r)
                          for k, r in row.items()} for row in steps]}
    for name in SERVERS:
        for slo in SLOS:
            figures[f"rate_{name}_{int(slo * 1000)}ms"] = sustained(steps, name, slo)
    for other, key in (("full", "serve_rate_over_full"), ("batching", "serve_rate_over_batching")):
        per_slo = {slo: ratio(figures[f"rate_exit_{slo}ms"], figures[f"rate_{other}_{slo}ms"]) for slo in MS}
        figures[f"{key}_by_slo"] = per_slo
        numbers = [r for r in per_slo.values() if isinstance(r, float)]  # an SLO neither met says nothing
        figures[key] = min(numbers) if numbers else (ONLY_OURS if ONLY_OURS in per_slo.values() else None)
    low = steps[0]
    figures["serve_p50_ratio"] = low["exit"]["p50"] / low["full"]["p50"]
    return figures


def ratio(ours, theirs):
    """ours / theirs; ONLY_OURS where only early exit met the SLO at any rate tried; None where neither did."""
    if not theirs:
        return ONLY_OURS if ours else None
    return ours / theirs


def sustained(steps, name, slo):
    """The highest rate up to which every rate kept `name`'s p99 under `slo` with nothing refused."""
    best = 0.0
    for row in steps:
        got = row.get(name)
        if got is None or got["p99"] >= slo or got["refused"]:
            break
        best = row["rate"]
    return best


class Server:
    """serve.py in its own process, pinned to `core`, on a free port."""

    def __init__(self, folder, core, batch_size, *flags):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "serve.py"), "--model_dir", str(folder), "--port", "0", "--threads", "1",
             "--batch_size", str(batch_size), "--max_queue", "100000", "--timeout", "600", *flags],
            stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
        said = []
        for line in self.process.stderr:
            said.append(line)
            if found := STARTED.search(line):
                self.host, self.port = found.group(1), int(found.group(2))
                return
        raise SystemExit("serve_load.py: a server did not start: " + "".join(said)[-1500:])

    def stop(self):
        self.process.terminate()
        self.process.wait(60)


def requests_of(texts, n, draw):
    return [json.dumps({"texts": draw.sample(texts, draw.randint(1, 4))}).encode() for _ in range(n)]


async def post(server, body):
    """(status, parsed body) of one POST /predict on its own connection."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload) if payload else None


def window(server, texts, rate, n, draw):
    """p50, p99 (seconds from each scheduled send), refusals and exit layers of `n` Poisson arrivals."""
    gaps, total = [], 0.0
    for _ in range(n):
        total += draw.expovariate(rate)
        gaps.append(total)
    bodies = requests_of(texts, len(gaps), draw)

    async def run():
        start = asyncio.get_running_loop().time()

        async def one(at, body):
            await asyncio.sleep(max(0.0, start + at - asyncio.get_running_loop().time()))
            status, reply = await post(server, body)
            return asyncio.get_running_loop().time() - (start + at), status, reply

        return await asyncio.gather(*(one(at, body) for at, body in zip(gaps, bodies, strict=True)))

    results = asyncio.run(run())
    latencies = sorted(r[0] for r in results)
    exits = [a["exit_layer"] for _, status, reply in results if status == 200 for a in reply["answers"]]
    return {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "requests": len(results),
            "refused": sum(status != 200 for _, status, _ in results), "exit_layers": exits}


def percentile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def closed_loop_rate(server, texts, draw, seconds):
    """Requests a second the server answers when 16 clients keep it busy."""
    async def run():
        end, count = time.monotonic() + seconds, 0

        async def client():
            nonlocal count
            while time.monotonic() < end:
                await post(server, requests_of(texts, 1, draw)[0])
                count += 1

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(16)))
        return count / (time.monotonic() - started)

    return asyncio.run(run())


def tiny_run(folder, texts):
    """A 3-layer narrow BERT saved as a run folder, with heads that spread exits (smoke runs)."""
    from engine_figures import narrow_model
    from workload import tokenizer_for

    from pabee.modeling.saved_folder import save_folder

    tokenizer = tokenizer_for(texts)[0]
    model = narrow_model(len(tokenizer), layers=3)
    save_folder(model, tokenizer, folder / "run")
    return folder / "run", ["--patience", "1"]


def markdown(f):
    lines = [f"Device: {f['device']}; {f['model']}; {f['requests_per_step']} requests per server and rate; full depth's "
             f"closed-loop rate {f['full_depth_closed_loop_rate']:.1f} requests/s; ideal speed-up "
             f"{f['ideal_speed_up']:.2f}", "", "| sustained requests/s at p99 < | " + " | ".join(SERVERS) + " |",
             "|---|---|---|---|"]
    for slo in SLOS:
        lines.append(f"| {int(slo * 1000)} ms | " + " | ".join(f"{f[f'rate_{n}_{int(slo * 1000)}ms']:.1f}"
                                                          for n in SERVERS) + " |")
    lines += ["", f"serve_rate_over_full {f['serve_rate_over_full']} (target >= 0.8 x ideal = "
                  f"{0.8 * f['ideal_speed_up']:.3f}; by SLO {f['serve_rate_over_full_by_slo']}); serve_rate_over_batching "
                  f"{f['serve_rate_over_batching']} (target > 1; by SLO {f['serve_rate_over_batching_by_slo']}); "
                  f"serve_p50_ratio {f['serve_p50_ratio']:.3f} (target <= 0.75)", "",
              "| rate | " + " | ".join(f"{n} p50 / p99 ms" for n in SERVERS) + " |", "|---|---|---|---|"]
    for row in f["steps"]:
        cells = [f"{row[n]['p50'] * 1000:.1f} / {row[n]['p99'] * 1000:.1f}" + (" (refused)" if row[n]["refused"]
                                                                                else "") if n in row else "-"
                 for n in SERVERS]
        lines.append(f"| {row['rate']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
