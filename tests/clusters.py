"""Real clusters for the grid's tests, on loopback only (../shared/CLUSTERS.md): a one-node Slurm
(Debian's slurm-wlm and munge, installed by .ci/run) started with its own configuration in a
temporary folder, and Ray inside a network namespace that has only loopback (`unshare -n`).
Each `*_missing()` says in one line why its cluster cannot start here, or None."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MAX_ARRAY_SIZE = 3  # small, so that a grid of a few runs is split over several arrays
# The node says it has 4 cores (config_overrides: this machine has 2), so that a cap of 2 runs at once
# is the grid's own and not the machine's.


def slurm_missing():
    tools = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")
    absent = [t for t in tools if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if absent:
        return f"no Slurm here ({', '.join(absent)} missing: .ci/run installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "Slurm's daemons are started as root here, and this is not root"
    if not Path("/etc/munge/munge.key").is_file():
        return "munge has no key (/etc/munge/munge.key): .ci/run makes one"
    return None


def slurm_conf(folder, host):
    return f"""ClusterName=pabeetest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ReturnToService=2
MaxArraySize={MAX_ARRAY_SIZE}
KillWait=5
MinJobAge=600
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2,bf_interval=2
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    """slurmctld and slurmd of a one-node cluster, configured in `folder`; SLURM_CONF names it to
    every Slurm command (submitit's included) that inherits the environment."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.pids = []

    def start(self):
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        conf = self.folder / "slurm.conf"
        conf.write_text(slurm_conf(self.folder, socket.gethostname().split(".")[0]))
        os.environ["SLURM_CONF"] = str(conf)
        start_munge()
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], check=True, timeout=60)
            self.pids.append(wait_for_pid(self.folder / f"{daemon}.pid"))
        deadline = time.monotonic() + 60
        while "idle" not in self.sinfo():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm node never became idle: {self.sinfo()}")
            time.sleep(0.5)
        return self

    def sinfo(self):
        return subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout

    def stop(self):
        subprocess.run(["scancel", "--user", "root"], capture_output=True, timeout=30)
        for pid in self.pids:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in self.pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.environ.pop("SLURM_CONF", None)


def start_munge():
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True, timeout=30)


def wait_for_pid(path):
    deadline = time.monotonic() + 30
    while not (path.is_file() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared: see the daemon's log beside it")
        time.sleep(0.2)
    return int(path.read_text())


def namespace_missing():
    """Ray's tests run inside `unshare -n` with only loopback up, so that Ray's addresses are all
    127.0.0.1 (it advertises the machine's interface otherwise)."""
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode:
        return f"no network namespace here for a loopback-only Ray (unshare -n: {probe.stderr.strip()[:120]})"
    return None


def in_loopback_namespace(command):
    """`command` (a list) run inside a new network namespace with only loopback up."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
