"""A real energyd in user mode on a private socket, for the whole session.

The daemon binary is $ENERGYD_BIN or target/debug/energyd of this
repository (build it with `cargo build -p energyd`); a missing binary
fails the tests rather than skipping them. The config forces the
estimated CPU source (no RAPL, no NVML), so figures are alike on every
machine and labelled `estimated`.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

# One BLAS thread, set before anything imports numpy: the training test's
# ops are then its one thread's CPU time (as in the committed trace), and
# OpenBLAS threads do not spin against each other on a loaded machine
# (300 small steps took 34 s with two threads here, 1.7 s with one).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO, "attribution", "tests", "fixtures", "pytorch")

CONFIG = """
[server]
socket_mode = "0666"

[sources]
powercap_root = "/nonexistent-powercap"
msr_root = "/nonexistent-msr"
nvml = false
"""


def energyd_bin():
    path = os.environ.get("ENERGYD_BIN") or os.path.join(REPO, "target", "debug", "energyd")
    if not os.path.exists(path):
        pytest.fail(f"no energyd binary at {path}: run `cargo build -p energyd` first")
    return path


class Daemon:
    def __init__(self):
        # Under /tmp with mode 755 so that a client of another uid can reach
        # the socket (pytest's own tmp_path is private to root).
        self.dir = tempfile.mkdtemp(prefix="energyd-py-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "energyd.sock")
        config = os.path.join(self.dir, "energyd.toml")
        with open(config, "w") as f:
            f.write(CONFIG)
        self.log = open(os.path.join(self.dir, "energyd.log"), "w")
        self.proc = subprocess.Popen(
            [energyd_bin(), "--user", "--socket", self.socket, "--config", config],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"energyd exited early: {open(self.log.name).read()}")
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.socket)
                s.close()
                # Let the samplers take a few samples before the tests ask.
                time.sleep(0.3)
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("energyd did not open its socket within 20 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    d.stop()
