"""The paper's grid spread by real engines (pabee.paper_grid.driver): a local Ray with two workers, a two-node Ray
cluster with logical GPUs losing a node mid-run, a driver stopped with Ctrl-C and started again, and
a one-node Slurm with job arrays, a cap and a requeue. Each grid gives the table, submissions and
weights of the same grid run one after the other in this process, at the same threads (CPU training
is deterministic at a given thread count; tests/clusters.py starts the clusters, loopback only)."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import reproduce_paper
from clusters import MAX_ARRAY_SIZE, Slurm, in_loopback_namespace, namespace_missing, slurm_missing
from pabee.fine_tuning import loop
from pabee.paper_grid.driver import makespan
from pabee.paper_grid.jobs import Outcome, job_env, run_job

ROOT = Path(__file__).resolve().parents[1]
# 4 training runs (vanilla and PABEE, 2 seeds), then PABEE's exit settings and 2 predictions on test
GRID = ["--learning_rates", "3e-3", "--batch_sizes", "16", "--seeds", "2", "--max_steps", "40", "--methods",
        "vanilla,pabee"]


def argv(world, out, *extra):
    return ["bert", "STS-B", "--glue_dir", str(world / "glue"), "--model_name_or_path", str(world / "bert"),
            "--output_dir", str(out), *GRID, *extra]


@pytest.fixture(scope="module")
def sequential(world, tmp_path_factory):
    """The grid one run after the other in this process, at one thread as each spread run has."""
    out = tmp_path_factory.mktemp("grid") / "sequential"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert reproduce_paper.main(argv(world, out, "--launcher", "local")) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def same_grid(out, expected):
    """The same table, submissions and trained weights as `expected`'s."""
    tables = [json.loads((d / "paper_table.json").read_text()) for d in (out, expected)]
    for table in tables:
        table.pop("runs")
    assert tables[0] == tables[1]
    assert (out / "paper_table.md").read_text() == (expected / "paper_table.md").read_text()
    submissions = sorted(p.relative_to(expected) for p in (expected / "submission").rglob("*.tsv"))
    assert submissions and [(out / p).read_bytes() for p in submissions] == [(expected / p).read_bytes()
                                                                            for p in submissions]
    weights = sorted(p.relative_to(expected) for p in (expected / "runs").rglob("model.safetensors"))
    assert len(weights) == 4 and all((out / p).read_bytes() == (expected / p).read_bytes() for p in weights)


def records(out):
    return [json.loads(p.read_text()) for p in sorted((out / "launch" / "jobs").glob("*.json"))]


def most_at_once(jobs):
    """The most jobs whose [started, ended] overlap at one time (of those whose end is recorded)."""
    jobs = [r for r in jobs if "ended" in r]
    events = sorted([(r["started"], 1) for r in jobs] + [(r["ended"], -1) for r in jobs])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def log_of(out, key):
    return (out / "launch" / "logs" / f"{key.replace(':', '-')}.log").read_text()


def ray_env():
    # Ray's own temporary folder, short (its socket paths have a length limit) and ours to look in;
    # no CUDA_VISIBLE_DEVICES, which would hide the logical GPUs a node declares
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}


# What a terminal gives a command: Ctrl-C's signal at its default, even where the suite itself was
# started with it ignored (a background job), which the driver would inherit and so never stop.
AS_FROM_A_TERMINAL = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.argv[1], sys.argv[1:])")


def start_driver(command, env):
    """A driver in a loopback-only namespace, in a session of its own so that a failed test ends it
    with everything it started (end_session); its pid is the driver's own (each step execs the next)."""
    return subprocess.Popen(in_loopback_namespace([sys.executable, "-c", AS_FROM_A_TERMINAL, *command]), cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def end_session(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def driver(command, env, timeout=300):
    process = start_driver(command, env)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        end_session(process)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


needs_namespace = pytest.mark.skipif(bool(namespace_missing()), reason=str(namespace_missing()))


@needs_namespace
def test_a_two_node_ray_cluster_with_gpus_loses_a_node_and_the_grid_completes(world, sequential, tmp_path):
    """One run per logical GPU, each sees its own CUDA_VISIBLE_DEVICES; the node a run started on is
    removed: the run is retried on the other node and the grid is the sequential one."""
    out = tmp_path / "cluster"
    proc = driver([sys.executable, str(ROOT / "tests" / "ray_cluster_grid.py"), *argv(world, out)], ray_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0 and len(result["removed"]) == 1, result
    same_grid(out, sequential)
    (removed,) = result["removed"]
    starts = re.findall(r"^--- \S+ on (.+), ", "".join(p.read_text() for p in (out / "launch" / "logs").iterdir()),
                        flags=re.M)
    # both nodes ran jobs; 8 jobs, those that had started on the removed node twice
    assert len(set(starts)) == 2 and 9 <= len(starts) <= 10 and log_of(out, removed).count("--- ") == 2
    jobs = records(out)
    assert all(r["gpu"] in ("0", "1") for r in jobs)
    for a in jobs:
        for b in jobs:
            overlap = a["key"] < b["key"] and a["started"] < b["ended"] and b["started"] < a["ended"]
            assert not (overlap and a["where"] == b["where"] and a["gpu"] == b["gpu"]), (a, b)


def processes_naming(*texts):
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(t in line for t in texts):
            found.append(line)
    return found


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.1)


@needs_namespace
def test_ctrl_c_ends_a_ray_grid_a_second_driver_is_refused_and_the_same_command_finishes_it(world, sequential, tmp_path):
    """A local Ray with two workers, stopped with Ctrl-C once a run has finished: exit 130 and no run
    or Ray process left; started again, it reuses the finished runs and gives the sequential grid."""
    out, env = tmp_path / "stopped", ray_env()
    command = [sys.executable, "reproduce_paper.py", *argv(world, out, "--workers", "2")]
    first = start_driver(command, env)
    try:
        wait_for(lambda: (out / "launch" / "jobs").is_dir() and records(out), 300, "first run")
        second = driver(command, ray_env(), 120)  # while the first driver holds the folder
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
        assert f"is writing into {out}" in second.stderr
        wait_for(lambda: any("ended" in r for r in records(out)), 300, "finished run")
        os.kill(first.pid, signal.SIGINT)  # unshare execs the driver: this is its pid
        stopped_at = time.time()
        _, err = first.communicate(timeout=120)
    finally:
        end_session(first)
    assert first.returncode == 130 and "stopped by SIGINT" in err, err[-3000:]
    wait_for(lambda: not processes_naming(str(out), env["RAY_TMPDIR"]), 30, "end of every run and Ray process")
    done = [r["key"] for r in records(out) if r.get("returncode") == 0]
    assert done

    again = driver(command, ray_env())
    assert again.returncode == 0, again.stderr[-3000:]
    same_grid(out, sequential)
    assert all(log_of(out, key).count("--- ") == 1 for key in done)  # finished before Ctrl-C: not run again
    jobs = records(out)
    assert any(r["started"] > stopped_at for r in jobs)  # and the rest run by the second call
    assert len(jobs) == 8 and {r["threads"] for r in jobs} == {"1"} and most_at_once(jobs) == 2
    lines = again.stdout.splitlines()
    assert "queued   STS-B pabee lr=3e-3 bs=16 seed=2: exit settings on dev" in lines
    assert any(re.fullmatch(r"started  STS-B pabee lr=3e-3 bs=16 seed=1: exit settings on dev on \S+ "
                            r"\(Ray node \w{8}\)", line) for line in lines)
    assert any(re.fullmatch(r"ended    .* on test \[2/2, about 0 s left\]", line) for line in lines)


def test_a_failed_run_is_reported_the_others_go_on_and_the_table_names_it(world, tmp_path, capsys):
    out = tmp_path / "failing"
    broken = out / "runs" / "STS-B" / "pabee" / "lr3e-3-bs16-seed1" / "checkpoint-999"  # a damaged checkpoint
    broken.mkdir(parents=True)
    (broken / "trainer_state.json").write_text("{not json")
    assert reproduce_paper.main(argv(world, out, "--launcher", "local", "--seeds", "1")) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"({broken.parent}): " in failed[0] and "checkpoint-999" in failed[0]
    table = json.loads((out / "paper_table.json").read_text())
    assert list(table["cells"]) == ["Vanilla|sts-b"] and len(table["missing"]) == 1
    assert str(broken.parent) in table["missing"][0]
    assert (out / "submission" / "vanilla" / "STS-B.tsv").is_file()


def test_a_job_out_of_process_ends_with_the_last_line_of_its_log(tmp_path):
    script = "import sys; print('working'); print('the line that says why', file=sys.stderr); sys.exit(3)"
    outcome = run_job((sys.executable, "-c", script), str(tmp_path), job_env(1), str(tmp_path), "train:1", "here")
    assert outcome == Outcome("train:1", False, "the line that says why", "here")
    record = json.loads((tmp_path / "launch" / "jobs" / "train-1.json").read_text())
    assert record["returncode"] == 3 and record["threads"] == "1" and record["ended"] >= record["started"]


needs_slurm = pytest.mark.skipif(bool(slurm_missing()), reason=str(slurm_missing()))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = Slurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@needs_slurm
def test_slurm_arrays_under_a_cap_and_a_requeued_run_resumes_to_the_sequential_grid(world, sequential, slurm, tmp_path,
                                                                                   monkeypatch):
    out = tmp_path / "slurm"
    requested = loop.StopOnSignal.requested

    steps = {"n": 0}

    def stop_once(self, runtime):  # the first run stops at step 10 with its checkpoint, as a pre-empted run does
        steps["n"] += 1
        if steps["n"] == 10:
            self.signal = signal.SIGTERM
        return requested(self, runtime)

    monkeypatch.setattr(loop.StopOnSignal, "requested", stop_once)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert reproduce_paper.main(argv(world, out, "--launcher", "local")) == 128 + signal.SIGTERM
    finally:
        torch.set_num_threads(threads)
        monkeypatch.setattr(loop.StopOnSignal, "requested", requested)
    first_run = out / "runs" / "STS-B" / "vanilla" / "lr3e-3-bs16-seed1"
    assert [p.name for p in first_run.glob("checkpoint-*")] == ["checkpoint-10"]

    command = [sys.executable, "reproduce_paper.py", *argv(world, out, "--launcher", "slurm", "--slurm_gpus", "0",
                                                            "--slurm_cpus", "1", "--slurm_array_parallelism", "2")]
    grid = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        record = out / "launch" / "jobs" / "train-1.json"
        wait_for(lambda: record.is_file() and json.loads(record.read_text())["slurm_job"], 300, "start of the first run")
        job = json.loads(record.read_text())["slurm_job"]
        subprocess.run(["scancel", job, "--signal", "USR2"], check=True)  # as submitit's job._interrupt(timeout=True)
        # Slurm holds a requeued job a couple of minutes (its BeginTime): an admin's scontrol lets it go at once
        wait_for(lambda: squeue_state(job) == "PENDING", 120, "requeue of the first run")
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        stdout, stderr = grid.communicate(timeout=300)
    finally:
        end_session(grid)
    assert grid.returncode == 0, stderr[-3000:]
    same_grid(out, sequential)
    log = log_of(out, "train:1")
    assert log.count("--- train:1") == 2 and log.strip().endswith("seed=1: resumed")  # requeued, then resumed
    jobs = records(out)
    assert len(jobs) == 8 and most_at_once(jobs) == 2 and {r["threads"] for r in jobs} == {"1"}
    arrays = {i.split("_")[0] for i in json.loads((out / "launch" / "slurm" / "submitted.json").read_text())["ids"]}
    assert len(arrays) >= 4  # training's 4 runs in two arrays (MaxArraySize 3), then evaluation and prediction
    assert MAX_ARRAY_SIZE == 3 and list((out / "launch" / "slurm").glob("*_submitted.pkl"))


@needs_slurm
def test_slurm_tasks_that_can_never_start_are_one_line_not_a_wait(world, slurm, tmp_path, capsys):
    code = reproduce_paper.main(argv(world, tmp_path / "never", "--launcher", "slurm", "--slurm_gpus", "0",
                                     "--slurm_cpus", "8"))  # the node has 4
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "Slurm will never start the grid's tasks as asked (PartitionConfig)" in err
    assert not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()  # nothing left queued


def squeue_state(job):
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def test_the_planner_says_how_long_the_grid_takes_on_the_runs_at_a_time(world, tmp_path, capsys):
    threads = torch.get_num_threads()
    assert reproduce_paper.main(argv(world, tmp_path / "out", "--dry_run", "--workers", "2")) == 0
    total = capsys.readouterr().out.splitlines()[-1]
    hours = [float(h) for h in re.findall(r"about ([\d.]+) h", total)]
    assert "ray, 2 run(s) at a time: about" in total and len(hours) == 2 and hours[1] <= hours[0]
    assert makespan([3, 1, 1, 1], 2) == 3 and makespan([2, 2, 2], 2) == 4 and makespan([5], 4) == 5
    assert not (tmp_path / "out").exists()
    assert torch.get_num_threads() == threads  # measured with a run's share, and given back
