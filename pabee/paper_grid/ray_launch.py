"""A grid's jobs as Ray tasks (pabee.paper_grid.driver): a local Ray started for the grid (`ray.init()`), or the
cluster of --ray_address / RAY_ADDRESS. With GPUs each job asks for one (Ray sets
CUDA_VISIBLE_DEVICES, so the run sees one device) and its node's share of the cores; without, each
asks for 1/--workers of a node's cores, so that Ray never runs more at once than the cores allow,
and its threads are that share. A task whose worker or node dies is retried (--retries): its run
resumes from its last checkpoint."""

import math
import os
import socket
import threading

from pabee.base.errors import UsageError, first_line
from pabee.base.logs import quiet_ray_thread
from pabee.paper_grid.jobs import ROOT, Outcome, job_env, run_job, where_here


def remote_job(command, cwd, env, output_dir, key):
    import ray

    node = ray.get_runtime_context().get_node_id()
    return run_job(command, cwd, env, output_dir, key, f"{where_here()} (Ray node {node[:8]})")


class RayEngine:
    """A local Ray started for the driver's life, or the cluster's Ray it joins (one already started
    in this process, a caller's, is used and left running)."""

    def __init__(self, launch, output_dir):
        try:
            import ray
        except ImportError:
            raise UsageError("--launcher ray needs Ray: pip install -r requirements.txt, or pass --launcher "
                             "local") from None
        self.ray, self.launch, self.output_dir = ray, launch, output_dir
        self.started = not ray.is_initialized()
        if self.started:
            connect(ray, launch.ray_address)

    def close(self):
        if self.started:
            self.ray.shutdown()

    def run(self, jobs, commands, progress):
        options, threads = task_shares(self.ray, self.launch)
        task = self.ray.remote(remote_job).options(max_retries=self.launch.retries, retry_exceptions=False, **options)
        env, cwd = job_env(threads), os.getcwd()
        keys = {task.remote(commands[job.key], cwd, env, str(self.output_dir), job.key): job.key for job in jobs}
        return wait_for(self.ray, keys, self.launch, progress, self.started)


CONNECT_TIMEOUT = 30  # seconds a cluster's Ray has to answer (Ray itself retries for many minutes)


def connect(ray, address):
    """ray.init: a local Ray without `address`, else the cluster there, which must take a connection at
    once and answer within CONNECT_TIMEOUT, or the run stops in one line naming the address."""
    options = dict(address=address, include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    if not address or address in ("auto", "local"):
        return ray.init(**options)
    check_listening(address)
    done, failure = threading.Event(), []

    def init():
        try:
            with quiet_ray_thread():
                ray.init(**options)
        except BaseException as e:  # Ray raises its own kinds for a cluster it cannot join
            failure.append(e)
        finally:
            done.set()

    threading.Thread(target=init, daemon=True, name="ray-connect").start()
    if not done.wait(CONNECT_TIMEOUT):
        raise UsageError(f"--ray_address {address}: Ray there did not answer within {CONNECT_TIMEOUT} s: give the "
                         "address of a running cluster's head (host:port of its GCS, as `ray start --head` printed)")
    if failure:
        raise UsageError(f"--ray_address {address}: cannot join the Ray cluster there ({first_line(failure[0])}): give "
                         "the address of a running cluster's head") from None


def check_listening(address):
    """Nothing listening at host:port is said at once (a typo in the address, a head not started)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 address in brackets
    if not port.isdigit() or not host:
        raise UsageError(f"--ray_address {address}: give host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(f"--ray_address {address}: nothing answers there ({e.strerror or first_line(e)}): start the "
                         "cluster's head (`ray start --head`) or give its address") from None


def task_shares(ray, launch):
    """(Ray resources each job asks for, its threads), from the smallest live node."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    cpus = min(n.get("CPU", 1.0) for n in nodes)
    gpus = min((n["GPU"] for n in nodes if n.get("GPU")), default=0)
    at_once = gpus or launch.workers or 1
    share = math.floor(cpus / at_once * 10000) / 10000  # Ray keeps 4 decimals: never more than the node has
    options = {"num_cpus": share, **({"num_gpus": 1} if gpus else {})}
    return options, max(1, int(cpus // at_once))


def wait_for(ray, keys, launch, progress, started):
    outcomes, pending = [], list(keys)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            progress.poll()
            for ref in ready:
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the job could not be started: the cause is ours
                    outcome = Outcome(keys[ref], False, f"{type(e.cause).__name__}: {first_line(e.cause)}")
                except ray.exceptions.RayError as e:
                    outcome = Outcome(keys[ref], False, f"its worker died {launch.retries + 1} times: {first_line(e)}")
                progress.ended(outcome)
                outcomes.append(outcome)
    except KeyboardInterrupt:
        if not started:  # a cluster's Ray outlives the driver: its tasks are told to stop (pabee.paper_grid.jobs.run_job)
            for ref in pending:
                ray.cancel(ref)
        raise  # a Ray started here is shut down with its workers, and their runs with them
    return outcomes
