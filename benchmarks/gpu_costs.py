"""What the exit engine's stream is worth on a GPU, predicted from its launch log and a per-call cost
table until a GPU measures the table (benchmarks/gpu_check.sh writes a measured one in the same form).

A table gives, for one BERT-base layer call with its head and rule update, the GPU's time by padded
rows and length bucket, eager and replayed as a CUDA graph, and the host's time per call in each
mode. A call costs max(host, GPU): the host issues the next call while the GPU runs this one.
A read of the rows' waits that the host had to wait for (`Launch.stalled`: no other call was issued
between the call and its read) also idles the GPU for the read and the host's next issue.

The default table (`DEFAULT`) is built from published and earlier measured figures, each labelled:
- H200, BERT-base shape, fp32, this repository's benchmark (the GPU speed issue): one layer call
  422 us eager, 181 us replayed as a CUDA graph; a layer's GPU time nearly flat from 32 rows to 1.
- NVIDIA's TensorRT BERT-base, fp16, A100, 128 tokens, 12 layers: 0.64 ms at batch 1, 4.06 ms at
  32, 8.05 ms at 64, 15.91 ms at 128: above the floor, about 0.081 us per token per layer.
So GPU time = max(floor, 0.081 us x rows x length), the floor 181 us (a graph replay of one layer:
the H200 figure), the eager host time 422 us per call (the H200 figure), the graph host time that
of the engine's own scheduling per call (measured on the CPU running the benchmark) plus 10 us to
replay, and a read 15 us (assumed: one small device-to-host copy and its event).
"""

import json
from pathlib import Path

PER_TOKEN_US = 15.91e3 / 12 / (128 * 128)  # TensorRT A100 fp16, batch 128, per layer and token
GRAPH_FLOOR_US = 181.0  # H200, one BERT-base layer replayed as a CUDA graph
EAGER_HOST_US = 422.0  # H200, one BERT-base layer eager: the host's pace
REPLAY_US = 10.0
READ_US = 15.0


def default_table(rows, lengths, scheduling_us):
    """The labelled default table over the declared buckets; scheduling_us: the engine's host time
    per call apart from the step (measured where the benchmark runs)."""
    gpu = {f"{r}x{t}": max(GRAPH_FLOOR_US, PER_TOKEN_US * r * t) for r in rows for t in lengths}
    return {"source": "predicted: H200 eager/graph layer figures and TensorRT A100 fp16 BERT-base scaling "
                      "(benchmarks/gpu_costs.py)",
            "gpu_us": {"eager": gpu, "graph": gpu},
            "host_us": {"eager": EAGER_HOST_US + scheduling_us, "graph": REPLAY_US + scheduling_us},
            "read_us": READ_US}


def launch_counts(launches):
    """How many calls of each (padded rows, length, stalled): all that pricing needs, as JSON keys."""
    counts = {}
    for x in launches:
        key = f"{x.padded},{x.length},{int(x.stalled)}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def call_cost(table, mode, padded, length, stalled):
    gpu = lookup(table["gpu_us"][mode], padded, length)
    host = table["host_us"][mode]
    return max(host, gpu) + (host + table["read_us"] if stalled else 0.0)


def lookup(gpu_us, rows, length):
    """The table's time for (rows, length), or, for a shape it lacks, the nearest larger one's scaled
    by tokens (a measured table covers the declared buckets)."""
    key = f"{rows}x{length}"
    if key in gpu_us:
        return gpu_us[key]
    shapes = sorted((int(k.split("x")[0]) * int(k.split("x")[1]), v) for k, v in gpu_us.items())
    tokens = rows * length
    larger = [(n, v) for n, v in shapes if n >= tokens] or shapes[-1:]
    n, v = larger[0]
    return v * max(tokens / n, 1.0) if n < tokens else v


def priced(table, mode, counts):
    """Predicted microseconds of a stream's layer calls (`launch_counts`)."""
    return sum(n * call_cost(table, mode, *map(int, key.split(","))) for key, n in counts.items())


def prediction(table, runs):
    """{key: value} for each run name (e.g. "bs64") in `runs`: {name: {"early": launch_counts,
    "full": launch_counts of full depth, "ideal": L / mean exit layer}}: the predicted speed-up and
    realized/ideal under the graph and the eager tables."""
    out = {}
    for name, run in runs.items():
        early, full, ideal = run["early"], run["full"], run["ideal"]
        for mode, prefix in (("graph", "predicted_gpu"), ("eager", "predicted_gpu_eager")):
            speed_up = priced(table, mode, full) / priced(table, mode, early)
            out[f"{prefix}_speed_up_{name}"] = speed_up
            out[f"{prefix}_realized_over_ideal_{name}"] = speed_up / ideal
    out["predicted_gpu_table"] = table["source"]
    return out


def read_table(path):
    return json.loads(Path(path).read_text())


def report(bench, table):
    """One JSON: what bench_speed measured on this device, the prediction from the default table,
    and the prediction from the measured table (which replaces it)."""
    measured = {k: v for k, v in bench.items() if k.startswith(("realized_over_ideal_bs", "speed_up_bs", "device"))}
    default = {k: v for k, v in bench.items() if k.startswith("predicted_gpu")}
    from_table = {k: v for k, v in table.items() if k.startswith("predicted_gpu")}
    return {"measured": measured, "predicted_default_table": default, "predicted_measured_table": from_table,
            "measured_table": table.get("table", {}).get("source")}


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="The GPU report: measured figures beside the predictions.")
    p.add_argument("--bench", required=True, help="bench_speed.py's (or engine_figures.py's) JSON.")
    p.add_argument("--table", required=True, help="gpu_table.py's JSON.")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    result = report(read_table(args.bench), read_table(args.table))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["predicted_measured_table"] else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
