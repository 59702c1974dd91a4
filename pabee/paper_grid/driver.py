"""A grid's independent runs (reproduce_paper.py, benchmarks/methods.py) spread by the engines
people already run: Ray (the default: a local Ray started for the grid, or a cluster's, one run per
GPU; pabee.paper_grid.ray_launch), Slurm job arrays through submitit (pabee.paper_grid.slurm_driver), or one after the
other in this process (local). Each job runs as pabee.paper_grid.jobs says; this module is the driver's side:
the launcher for the driver's life, the progress lines, and the planner's runs at a time. A job
that fails is reported (its folder, its last log line) and the others go on; one whose worker or
node dies is retried and resumes from its run's last checkpoint (run_glue.py's exact resume)."""

import json
import signal
import sys
import time

from pabee.base.errors import Interrupted, UsageError, first_line
from pabee.paper_grid.jobs import Outcome, job_command, record_path


class Progress:
    """One line per job as it is queued, starts (where, which GPU), ends or fails, and a bar with the
    time left at the pace of the jobs that finished."""

    def __init__(self, jobs, output_dir):
        from tqdm import tqdm

        self.jobs = {job.key: job for job in jobs}
        self.output_dir = output_dir
        self.seen = {}
        self.bar = tqdm(total=len(jobs), unit="job", file=sys.stderr, dynamic_ncols=True, leave=False,
                        disable=not sys.stderr.isatty())  # a log gets the same in each line's count
        self.start, self.done = time.monotonic(), 0
        for job in jobs:
            self.say(f"queued   {job.describe}")

    def say(self, line):
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()

    def poll(self):
        """Says each start the jobs' records show since the last poll (a retry is a second start)."""
        for key, job in self.jobs.items():
            path = record_path(self.output_dir, key)
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if self.seen.get(key) != record["started"]:
                self.seen[key] = record["started"]
                gpu = f", GPU {record['gpu']}" if record["gpu"] else ""
                self.say(f"started  {job.describe} on {record['where']}{gpu}")

    def ended(self, outcome):
        self.poll()
        job = self.jobs[outcome.key]
        self.done += 1
        left = (time.monotonic() - self.start) / self.done * (len(self.jobs) - self.done)
        count = f"[{self.done}/{len(self.jobs)}, about {format_seconds(left)} left]"
        if outcome.ok:
            self.say(f"ended    {job.describe} {count}")
        else:
            self.say(f"FAILED   {job.describe} ({job.folder}): {outcome.line} {count}")
        self.bar.update(1)

    def close(self):
        self.bar.close()


def format_seconds(seconds):
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class Grid:
    """The launcher of a driver, for its life (a local Ray is started once, whatever the phases):
    `run(jobs)` runs jobs and returns those that failed, each already reported. `here(key)` does a
    job in this process, for the local launcher; other launchers call `script` with `argv` and
    --job KEY."""

    def __init__(self, launch, output_dir, script, argv, here):
        self.launch, self.output_dir, self.script, self.argv = launch, output_dir, script, argv
        self.engine = LocalEngine(here)

    def __enter__(self):
        if self.launch.launcher == "ray":
            from pabee.paper_grid.ray_launch import RayEngine

            self.engine = RayEngine(self.launch, self.output_dir)
        elif self.launch.launcher == "slurm":
            try:
                from pabee.paper_grid.slurm_driver import SlurmEngine
            except ImportError:
                raise UsageError("--launcher slurm needs submitit: pip install -r requirements.txt") from None
            self.engine = SlurmEngine(self.launch, self.output_dir)
        # a driver told to stop ends its runs as on Ctrl-C
        self.on_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.engine.close()

    def run(self, jobs):
        if not jobs:
            return []
        progress = Progress(jobs, self.output_dir)
        try:
            outcomes = self.engine.run(jobs, {job.key: job_command(self.script, self.argv, job.key) for job in jobs},
                                       progress)
        finally:
            progress.close()
        failed = {o.key for o in outcomes if not o.ok}
        return [job for job in jobs if job.key in failed]


class LocalEngine:
    """One job after the other in this process: a run that fails is reported and the next goes on;
    an interrupted one (Ctrl-C, SIGTERM: its checkpoint saved) ends the grid."""

    def __init__(self, here):
        self.here = here

    def run(self, jobs, commands, progress):
        outcomes = []
        for job in jobs:
            progress.say(f"started  {job.describe} here")
            try:
                self.here(job.key)
                outcome = Outcome(job.key, True, "", "here")
            except Interrupted:
                raise
            except Exception as e:  # noqa: BLE001 - any run's failure is reported and the next goes on
                outcome = Outcome(job.key, False, first_line(e))
            progress.ended(outcome)
            outcomes.append(outcome)
        return outcomes

    def close(self):
        pass


def concurrency(launch, runs):
    """Runs at a time the grid will have (the planner's guess, nothing started): Ray's GPUs here or
    --workers; Slurm's array parallelism (0: all); local one."""
    if launch.launcher == "local":
        return 1
    if launch.launcher == "slurm":
        return launch.slurm.array_parallelism or runs
    import torch

    return torch.cuda.device_count() or launch.workers or 1  # as the Ray engine: GPUs first


def makespan(durations, slots):
    """Wall time of `durations` given in order to `slots` workers, each taking the next when free."""
    free = [0.0] * max(1, slots)
    for seconds in durations:
        i = free.index(min(free))
        free[i] += seconds
    return max(free)
