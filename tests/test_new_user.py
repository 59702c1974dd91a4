"""What a new user trips over, run as they would run it, checking what they see: a Ray address where
nothing listens ends at once in one line; --launcher slurm without Slurm's commands names them, not
the disk; every script's --help states each flag's default once; export.py refuses an output folder
before it reads the run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import demo
import export
import predict
import reproduce_paper
import run_glue
import serve
from clusters import in_loopback_namespace, namespace_missing
from pabee.paper_grid.ray_launch import CONNECT_TIMEOUT

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--max_steps", "5", "--seeds", "1", "--methods", "pabee"]


def grid(world, out, *extra):
    return [sys.executable, "reproduce_paper.py", "bert", "STS-B", "--glue_dir", str(world / "glue"),
            "--model_name_or_path", str(world / "bert"), "--output_dir", str(out), *GRID, *extra]


def one_error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_a_ray_address_where_nothing_listens_ends_at_once_in_one_line(world, tmp_path):
    """Ray itself retried such an address for 13 minutes, then advised freeing disk space. The test
    checks that the run ends (well within four times the connect timeout), not how fast."""
    proc = subprocess.run(grid(world, tmp_path / "out", "--ray_address", "127.0.0.1:1"), cwd=ROOT, capture_output=True,
                          text=True, timeout=4 * CONNECT_TIMEOUT + 60)
    line = one_error_line(proc)
    assert "--ray_address 127.0.0.1:1" in line and "nothing answers there" in line and "disk" not in line


def test_slurm_without_its_commands_names_them_not_the_disk(world, tmp_path):
    """Slurm is installed here: its commands are hidden from PATH, as on a machine without it."""
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    proc = subprocess.run(grid(world, tmp_path / "out", "--launcher", "slurm"), cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    line = one_error_line(proc)
    assert "Slurm's client commands" in line and "sbatch" in line and "scontrol" in line
    assert "disk" not in line and "permissions" not in line


@pytest.mark.parametrize("script", [run_glue, reproduce_paper, predict, serve, export, demo], ids=lambda m: m.__name__)
def test_help_states_each_default_once(script, capsys):
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    flags = [" ".join(flag.split()) for flag in printed.split("\noptions:\n")[1].split("\n  -")[1:]]
    assert len(flags) > 3
    appended = 0
    for flag in flags:  # argparse's "(default: X)" only where the flag's own words say no default
        said = re.search(r"\(default: [^()]*\)$", flag)
        if said:
            appended += 1
            assert "default" not in flag[:said.start()].lower(), flag
    assert appended > 0


def test_export_refuses_an_output_folder_before_reading_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # not read: the refusals come first
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    for out, why in ((taken, "exists and is not empty"), (run, "is the run itself")):
        assert export.main(["--model_dir", str(run), "--output_dir", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0] and "layer" not in err[0], err
    assert (taken / "keep.txt").read_text() == "mine"


def test_an_os_error_gets_the_disk_advice_only_where_the_disk_is_the_cause():
    import errno

    from pabee.base.errors import os_error_line

    missing = os_error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "scontrol"))
    assert missing == "No such file or directory: scontrol"
    full = os_error_line(OSError(errno.ENOSPC, "No space left on device", "/out/x"))
    assert full == "No space left on device: /out/x: free space on its disk, then run again"
    assert "permissions" in os_error_line(PermissionError(errno.EACCES, "Permission denied", "/out"))
    assert "disk" not in os_error_line(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))


@pytest.mark.skipif(bool(namespace_missing()), reason=str(namespace_missing()))
def test_a_ray_address_that_takes_the_connection_but_never_answers_ends_after_the_timeout(world, tmp_path):
    """A port that accepts and says nothing (not a Ray head): the run ends after the connect timeout
    (3 s here) in one line, Ray not left joined. In a loopback-only namespace: Ray's traffic stays there."""
    code = ("import socket, sys; listener = socket.socket(); listener.bind(('127.0.0.1', 0)); listener.listen(); "
            "import pabee.paper_grid.ray_launch as launch; launch.CONNECT_TIMEOUT = 3; import reproduce_paper; "
            "sys.exit(reproduce_paper.main(sys.argv[1:] + ['--ray_address', '127.0.0.1:%d' % "
            "listener.getsockname()[1]]))")
    command = grid(world, tmp_path / "out")
    proc = subprocess.run(in_loopback_namespace([sys.executable, "-c", code, *command[2:]]), cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    line = one_error_line(proc)
    assert "did not answer within 3 s" in line and "disk" not in line
