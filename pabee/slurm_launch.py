"""A grid's jobs as Slurm job arrays through submitit (pabee.grid, --launcher slurm).

Each job is an array task asking for --slurm_gpus GPUs and --slurm_cpus cores (its threads). Arrays
are split under the cluster's MaxArraySize and chained (each waits for the one before), so that
--slurm_array_parallelism caps the runs at once over the whole grid. On Slurm's time-limit signal
(submitit asks for USR2 before the limit) or a preemption, the run is told to stop (SIGTERM: its
step finishes and a checkpoint is saved) and the task is requeued: it resumes from that checkpoint.
A task that leaves the queue without saying how its job ended (a node died, it was cancelled) is
submitted again, up to --retries times. submitit's own files live in <output_dir>/launch/slurm; the
driver reads only the jobs' JSON records (pabee.jobs), never submitit's pickles."""

import subprocess
import time
from pathlib import Path

import submitit

from pabee.errors import UsageError
from pabee.files import read_json, write_json
from pabee.jobs import ROOT, Outcome, job_env, last_line, launch_dir, record_path, start_job, where_here

RUNNING = []  # the run process of this array task, for checkpoint(), which submitit calls in a signal handler
STOPPED = (128 + 15, 128 + 2, -15, -9, -2)  # a run stopped by a signal ends no job: Slurm requeues or ends it
TIMEOUTS = 10  # requeues at the time limit a run may take before it is failed


class SlurmRun(submitit.helpers.Checkpointable):
    """One job in one array task: its process started and waited for."""

    def __init__(self, command, cwd, env, output_dir, key):
        self.command, self.cwd, self.env, self.output_dir, self.key = command, cwd, env, output_dir, key

    def __call__(self):
        process, record, log = start_job(self.command, self.cwd, self.env, self.output_dir, self.key, where_here())
        RUNNING.append(process)
        code = process.wait()
        if code not in STOPPED:
            write_json(record_path(self.output_dir, self.key),
                       {**record, "ended": time.time(), "returncode": code, "line": last_line(log)})

    def checkpoint(self, *more, **named):
        """Called by submitit on the time-limit or preemption signal, before it requeues the task."""
        for process in RUNNING:
            stop_and_wait(process.pid)
        return super().checkpoint(*more, **named)


def stop_and_wait(pid, seconds=600):
    """SIGTERM to the run, then wait for it to save and exit. Read from /proc, not Popen.wait: the
    main thread is inside Popen.wait, holding the lock a second wait would need."""
    import os
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.5)


class SlurmEngine:
    def __init__(self, launch, output_dir):
        self.launch, self.output_dir = launch, output_dir
        self.folder = launch_dir(output_dir) / "slurm"
        self.ids_file = self.folder / "submitted.json"
        self.cancel_leftovers()

    def close(self):
        pass

    def cancel_leftovers(self):
        """Tasks a killed driver left in the queue are cancelled (their runs save a checkpoint), so
        that this driver resumes each run once."""
        ids = read_json(self.ids_file) if self.ids_file.is_file() else []
        alive = [i for i in ids if i in queued_ids()]
        if alive:
            scancel(alive)
            deadline = time.monotonic() + 120
            while set(alive) & queued_ids() and time.monotonic() < deadline:
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
        executor, previous, tasks = self.executor(), None, {}
        try:
            for start in range(0, len(jobs), size):
                chunk = jobs[start:start + size]
                if previous:
                    executor.update_parameters(additional_parameters={"dependency": f"afterany:{previous}"})
                tasks.update(self.submit(executor, [calls[job.key] for job in chunk]))
                previous = tasks[chunk[0].key].split("_")[0]
            return self.wait_for(calls, tasks, progress)
        except KeyboardInterrupt:
            scancel(list(tasks.values()))
            raise

    def submit(self, executor, calls):
        """{key: Slurm id} of `calls` submitted as one array (or one job)."""
        for call in calls:
            record_path(self.output_dir, call.key).unlink(missing_ok=True)  # a stale end is not this task's
        try:
            with executor.batch():
                submitted = [executor.submit(call) for call in calls]
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as e:
            raise UsageError(f"Slurm refused the grid's jobs ({str(e).strip().splitlines()[-1][:300]}): check "
                             "--slurm_partition, --slurm_gpus, --slurm_cpus and --slurm_time") from None
        ids = {call.key: job.job_id for call, job in zip(calls, submitted)}
        known = read_json(self.ids_file) if self.ids_file.is_file() else []
        write_json(self.ids_file, known + list(ids.values()))
        return ids

    def wait_for(self, calls, tasks, progress):
        """Outcomes from the jobs' records; a task gone from the queue with no end is submitted again."""
        outcomes, tries, gone = {}, dict.fromkeys(tasks, 0), dict.fromkeys(tasks, 0)
        while len(outcomes) < len(tasks):
            time.sleep(1)
            progress.poll()
            queued = queued_ids()
            for key, task in tasks.items():
                if key in outcomes:
                    continue
                record = read_record(self.output_dir, key)
                if record and "ended" in record:
                    outcomes[key] = Outcome(key, record["returncode"] == 0, record["line"], record["where"])
                    progress.ended(outcomes[key])
                elif task in queued:
                    gone[key] = 0
                else:
                    gone[key] += 1  # three polls in a row: squeue may lag a requeue by a moment
                    if gone[key] >= 3:
                        tries[key], gone[key] = tries[key] + 1, 0
                        if tries[key] > self.launch.retries:
                            outcomes[key] = Outcome(key, False, f"its Slurm task {task} ended without a result "
                                                    f"{tries[key]} times: see {self.folder}")
                            progress.ended(outcomes[key])
                        else:
                            tasks[key] = self.submit(self.executor(), [calls[key]])[key]
        return list(outcomes.values())


def read_record(output_dir, key):
    try:
        return read_json(record_path(output_dir, key))
    except (OSError, ValueError):
        return None


def queued_ids():
    """Slurm ids in the queue (pending, running, requeued), array tasks one by one."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60).stdout
    return set(out.split())


def scancel(ids):
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


def max_array_size():
    """The cluster's MaxArraySize (Slurm's default 1001 where it does not say)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        if line.split("=")[0].strip() == "MaxArraySize":
            return int(line.split("=")[1])
    return 1001
