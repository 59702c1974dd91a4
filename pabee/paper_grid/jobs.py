"""One job of a grid (pabee.paper_grid.driver) as its own process: a piece of a grid (a run's training, its
evaluations, its predictions) named by a key, run as the script that planned the grid called again
with `--job KEY`, with its share of the machine (the GPU Ray or Slurm gave it, or its share of the
cores as threads), its output in <output_dir>/launch/logs/<key>.log. It records where and when it
started and how it ended in <output_dir>/launch/jobs/<key>.json, which the driver reads: no model
is pickled, and a run's folder is what run_glue.py writes. The run dies with the process that
started it (become_job)."""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pabee.base.file_io import write_json

ROOT = Path(__file__).resolve().parents[2]  # on the path of every job: the package they import
PASSED_ON = ("PABEE_", "HF_", "TRANSFORMERS_")  # variables a job gets from the driver on any node


@dataclass(frozen=True)
class Job:
    key: str  # what --job names, e.g. train:3
    describe: str  # what a person reads: the run and the piece
    folder: str  # the run's folder, named when it fails


@dataclass(frozen=True)
class Outcome:
    key: str
    ok: bool
    line: str  # the last line of its log (or why it has none)
    where: str = ""


def launch_dir(output_dir):
    return Path(output_dir).resolve() / "launch"


def safe_name(key):
    return key.replace(":", "-").replace("/", "_")


def record_path(output_dir, key):
    return launch_dir(output_dir) / "jobs" / f"{safe_name(key)}.json"


def job_command(script, argv, key):
    """The command a launcher runs for `key`: the script with the driver's flags, then --job (the
    last of a repeated flag wins)."""
    return (sys.executable, str(Path(script).resolve()), *argv, "--job", key)


def job_argv(argv, **values):
    """The driver's flags, then `values` as flags, folders (*_dir) and existing paths made absolute:
    a job may run elsewhere, where the driver's folder and environment are not."""
    extra = [(f"--{name}", os.path.abspath(v) if name.endswith("_dir") or os.path.exists(v) else v)
             for name, v in values.items() if v is not None]
    return [*argv, *(part for pair in extra for part in pair)]


def job_env(threads):
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON) and "TOKEN" not in k}  # no secret on disk
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PARENT = "PABEE_JOB_PARENT"  # the pid of the process that started a job


def become_job(job):
    """Called first by a script, run as a job when `job` names one: it dies with the process that
    started it (a killed Ray worker, a removed node, a driver's Ctrl-C), so that no run outlives its
    grid and its lock on its folder goes with it; one whose starter is already gone ends at once."""
    if not job:
        return
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.environ.get(PARENT) and os.getppid() != int(os.environ[PARENT]):
        os._exit(1)


def start_job(command, cwd, env, output_dir, key, where):
    """Starts the job's process, its output appended to its log; marks it started."""
    log = launch_dir(output_dir) / "logs" / f"{safe_name(key)}.log"
    for folder in (log.parent, record_path(output_dir, key).parent):
        folder.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- {key} on {where}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env, PARENT: str(os.getpid())}, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    record = {"key": key, "where": where, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
              "threads": env.get("OMP_NUM_THREADS"), "started": time.time(), "pid": process.pid,
              "slurm_job": os.environ.get("SLURM_JOB_ID", "")}
    write_json(record_path(output_dir, key), record)
    return process, record, log


def finish_job(process, record, log, output_dir):
    """Waits for the job's process; marks how it ended; returns the Outcome."""
    code = process.wait()
    ended = {**record, "ended": time.time(), "returncode": code, "line": last_line(log)}
    write_json(record_path(output_dir, record["key"]), ended)
    return Outcome(record["key"], code == 0, ended["line"], record["where"])


def run_job(command, cwd, env, output_dir, key, where):
    process, record, log = start_job(command, cwd, env, output_dir, key, where)
    try:
        return finish_job(process, record, log, output_dir)
    except KeyboardInterrupt:  # the job cancelled (Ray's cancel): the run is told to stop, its checkpoint saved
        process.terminate()
        process.wait(timeout=120)
        raise


def last_line(log):
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def where_here():
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()
