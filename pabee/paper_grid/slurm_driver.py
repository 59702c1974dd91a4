"""A grid's jobs as Slurm job arrays through submitit (pabee/paper_grid/driver.py, --launcher slurm).

Each job is an array task asking for --slurm_gpus GPUs and --slurm_cpus cores (its threads). Arrays
are split under the cluster's MaxArraySize and chained (each waits for the one before), so that
--slurm_array_parallelism caps the runs at once over the whole grid. A task that leaves the queue
without saying how its job ended (a node died, it was cancelled) is submitted again, up to --retries
times. submitit's own files live in <output_dir>/launch/slurm; the driver reads only the jobs' JSON
records (pabee/paper_grid/jobs.py), never submitit's pickles."""

import getpass
import socket
import shutil
import subprocess
import time
from pathlib import Path

import submitit

from pabee.base.errors import UsageError
from pabee.base.file_io import read_json, write_json
from pabee.paper_grid.jobs import ROOT, Outcome, job_env, launch_dir, record_path
from pabee.paper_grid.slurm_node import SlurmRun

SQUEUE_EVERY = 10  # seconds between looks at the queue (the jobs' own records are read every second)
# why a task waits that means it never starts (squeue's reasons)
NEVER = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
         "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed")
TIMEOUTS = 10  # requeues at the time limit a run may take before it is failed


class SlurmEngine:
    def __init__(self, launch, output_dir):
        check_slurm_commands()
        self.launch, self.output_dir = launch, output_dir
        self.folder = launch_dir(output_dir) / "slurm"
        self.ids_file = self.folder / "submitted.json"  # {"driver": host, "ids": [...]}: what this folder's drivers submitted
        self.cancel_leftovers()

    def close(self):
        pass

    def cancel_leftovers(self):
        """Tasks a killed driver left in the queue are cancelled (their runs save a checkpoint), so
        that this driver resumes each run once. The lock that refuses a second driver is this
        machine's: one that submitted from another machine is not second-guessed."""
        if not self.ids_file.is_file():
            return
        known, host = read_json(self.ids_file), socket.gethostname()
        alive = [i for i in known["ids"] if i in (queued_ids() or set(known["ids"]))]
        if alive and known["driver"] != host:
            raise UsageError(f"a driver on {known['driver']} has Slurm tasks of this grid in the queue ({alive[0]}, ...): "
                             f"run this command there, or scancel them first")
        scancel(alive)
        deadline = time.monotonic() + 120
        while alive and set(alive) & set(queued_ids() or alive) and time.monotonic() < deadline:
            time.sleep(1)

    def executor(self):
        slurm = self.launch.slurm
        executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=TIMEOUTS)
        executor.update_parameters(
            time=slurm.time_min, cpus_per_task=slurm.cpus, ntasks_per_node=1, job_name="pabee-grid",
            setup=[f'export PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"'], stderr_to_stdout=True,
            **({"gpus_per_node": slurm.gpus} if slurm.gpus else {}),
            **({"partition": slurm.partition} if slurm.partition else {}),
            **({"array_parallelism": slurm.array_parallelism} if slurm.array_parallelism else {}))
        return executor

    def run(self, jobs, commands, progress):
        env = job_env(self.launch.slurm.cpus)
        calls = {job.key: SlurmRun(commands[job.key], str(Path.cwd()), env, str(self.output_dir), job.key)
                 for job in jobs}
        size = self.launch.slurm.max_array_size or max_array_size()
        executor, tasks = self.executor(), {}
        try:
            for start in range(0, len(jobs), size):
                chunk = jobs[start:start + size]
                if start and self.launch.slurm.array_parallelism:  # one cap over all arrays: each waits for the last
                    previous = tasks[jobs[start - size].key].split("_")[0]
                    executor.update_parameters(additional_parameters={"dependency": f"afterany:{previous}"})
                tasks.update(self.submit(executor, [calls[job.key] for job in chunk]))
            return self.wait_for(calls, tasks, progress)
        except BaseException:  # Ctrl-C, or Slurm refusing a later array: nothing left queued without a driver
            scancel(list(tasks.values()))
            raise

    def submit(self, executor, calls):
        """{key: Slurm id} of `calls` submitted as one array (or one job)."""
        for call in calls:
            record_path(self.output_dir, call.key).unlink(missing_ok=True)  # a stale end is not this task's
        try:
            with executor.batch():
                submitted = [executor.submit(call) for call in calls]
        except (submitit.core.utils.FailedJobError, subprocess.SubprocessError, OSError) as e:
            raise UsageError(f"Slurm refused the grid's jobs ({str(e).strip().splitlines()[-1][:300]}): check "
                             "--slurm_partition, --slurm_gpus, --slurm_cpus and --slurm_time") from None
        ids = {call.key: job.job_id for call, job in zip(calls, submitted, strict=True)}
        known = read_json(self.ids_file)["ids"] if self.ids_file.is_file() else []
        write_json(self.ids_file, {"driver": socket.gethostname(), "ids": known + list(ids.values())})
        return ids

    def wait_for(self, calls, tasks, progress):
        """Outcomes from the jobs' records; a task gone from the queue with no end (three looks in a
        row: squeue may lag a requeue) is cancelled for good and submitted again, --retries times."""
        outcomes, tries, gone, looked = {}, dict.fromkeys(tasks, 0), dict.fromkeys(tasks, 0), 0.0
        while len(outcomes) < len(tasks):
            time.sleep(1)
            progress.poll()
            queued = None
            if time.monotonic() - looked >= SQUEUE_EVERY:
                queued, looked = queued_ids(), time.monotonic()
                check_startable(queued or {}, list(tasks.values()))
            for key, task in tasks.items():
                record = None if key in outcomes else read_record(self.output_dir, key)
                if record and "ended" in record:
                    outcomes[key] = Outcome(key, record["returncode"] == 0, record["line"], record["where"])
                    progress.ended(outcomes[key])
                elif key not in outcomes and queued is not None:  # None: not looked, or squeue failed
                    gone[key] = 0 if task in queued else gone[key] + 1
                if gone[key] >= 3:
                    scancel([task])
                    tries[key], gone[key] = tries[key] + 1, 0
                    if tries[key] <= self.launch.retries:
                        tasks[key] = self.submit(self.executor(), [calls[key]])[key]
                        continue
                    outcomes[key] = Outcome(key, False, f"its Slurm task {task} ended without a result {tries[key]} "
                                            f"times: see {self.folder}")
                    progress.ended(outcomes[key])
        return list(outcomes.values())


def read_record(output_dir, key):
    try:
        return read_json(record_path(output_dir, key))
    except (OSError, ValueError):
        return None


def queued_ids():
    """{Slurm id: why it waits} of this user's tasks in the queue (pending, running, requeued), array
    tasks one by one; None when squeue does not answer (a busy controller): unknown, not empty."""
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i %r", "-u", getpass.getuser()], capture_output=True,
                              text=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    return dict((line.split(" ", 1) + [""])[:2] for line in done.stdout.splitlines()) if done.returncode == 0 else None


def check_startable(queued, tasks):
    """A task Slurm will never start as asked (more than a partition's nodes have, an account or QOS
    that may not run there) ends the grid in one line instead of waiting for ever."""
    never = [queued[t] for t in tasks if queued.get(t, "").split(",")[0] in NEVER]
    if never:
        scancel(tasks)
        raise UsageError(f"Slurm will never start the grid's tasks as asked ({never[0]}): check --slurm_partition, "
                         "--slurm_gpus, --slurm_cpus and --slurm_time against the cluster (sinfo)")


def scancel(ids):
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


SLURM_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")


def check_slurm_commands():
    """Slurm's client commands must be on PATH before anything is submitted."""
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        raise UsageError(f"--launcher slurm needs Slurm's client commands, and {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not on PATH: install them (Debian: slurm-client) or "
                         "run on a machine of the cluster, or use --launcher ray")


def max_array_size():
    """The cluster's MaxArraySize (Slurm's default 1001 where it does not say)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        if line.split("=")[0].strip() == "MaxArraySize":
            return int(line.split("=")[1])
    return 1001
