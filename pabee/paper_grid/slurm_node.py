"""What runs on a Slurm node for one array task (submitit pickles it, by this module's path): the
job's process started and waited for, told to stop on Slurm's time-limit signal or a preemption, so
that the task is requeued and resumes from its last checkpoint."""

import os
import signal
import time
from pathlib import Path

import submitit

from pabee.base.file_io import write_json
from pabee.paper_grid.jobs import last_line, record_path, start_job, where_here

RUNNING = []  # the run process of this array task, for checkpoint(), which submitit calls in a signal handler
STOPPED = (128 + 15, 128 + 2, -15, -2)  # a run told to stop ends no job: Slurm requeues or ends it


class SlurmRun(submitit.helpers.Checkpointable):
    """One job in one array task: its process started and waited for."""

    def __init__(self, command, cwd, env, output_dir, key):
        self.command, self.cwd, self.env, self.output_dir, self.key = command, cwd, env, output_dir, key

    def __call__(self):
        # USR2 ignored while the run starts, which so inherits it: Slurm's time-limit signal is for
        # this wrapper (submitit's handler), not the run, whose default would be to die unsaved
        handler = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            process, record, log = start_job(self.command, self.cwd, self.env, self.output_dir, self.key, where_here())
        finally:
            signal.signal(signal.SIGUSR2, handler)
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


def stop_and_wait(pid, seconds=60):
    """SIGTERM to the run, then wait for it to save and exit. Read from /proc, not Popen.wait: the
    main thread is inside Popen.wait, holding the lock a second wait would need."""
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
