"""EnergyMonitor and Client against a real energyd (user mode, estimated source)."""

import os
import subprocess
import sys
import time

import pytest

import energyd
from energyd import EnergyMonitor

PKG = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def burn(seconds):
    """CPU work for about `seconds` (a busy loop: the estimated source
    charges CPU time)."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += sum(i * i for i in range(2000))
    return x


def test_window_energy_has_provenance_and_uncertainty(daemon):
    with EnergyMonitor(socket=daemon.socket) as monitor:
        monitor.begin_window("work")
        burn(0.4)
        m = monitor.end_window("work")
    assert m.name == "work"
    assert 0.35 < m.time_s < 5.0
    assert m.provenance == "estimated", "this VM's source is an estimate, never 'measured'"
    assert m.energy_j > 0.0
    assert m.uncertainty_j >= 0.0
    (cpu,) = [d for d in m.domains if d.domain == "cpu"]
    assert cpu.in_total and cpu.provenance == "estimated"
    # The process's energy is part of the machine's.
    assert cpu.energy_j <= cpu.machine_j + 1e-9
    # A busy process holds most of one of the machine's CPUs' activity.
    assert cpu.activity_share > 0.1
    assert [s.provenance for s in m.machine] == ["estimated"]
    row = m.as_row()
    assert row["window"] == "work" and row["energy_j[cpu]"] == cpu.energy_j


def test_nested_and_overlapping_windows(daemon):
    with EnergyMonitor(socket=daemon.socket) as monitor:
        with monitor.window("outer") as outer:
            burn(0.2)
            with monitor.window("inner") as inner:
                burn(0.3)
            burn(0.2)
        assert outer.result is not None and inner.result is not None
        assert outer.result.start_ns <= inner.result.start_ns
        assert inner.result.end_ns <= outer.result.end_ns
        assert inner.result.time_s < outer.result.time_s
        # The outer window holds the inner one's work and more.
        assert outer.result.energy_j > inner.result.energy_j > 0.0
        # The same name cannot be open twice; an unknown one cannot end.
        monitor.begin_window("a")
        with pytest.raises(ValueError, match="already open"):
            monitor.begin_window("a")
        monitor.end_window("a")
        with pytest.raises(ValueError, match="not open"):
            monitor.end_window("a")


def test_daemon_not_running_is_a_clear_exception(tmp_path):
    missing = str(tmp_path / "nothing.sock")
    with pytest.raises(energyd.DaemonNotRunning, match="energyd --user"):
        EnergyMonitor(socket=missing)
    # A file that is not a socket reads the same way.
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(energyd.DaemonNotRunning):
        energyd.Client(str(plain))


def test_daemon_errors_become_typed_exceptions(daemon):
    with energyd.Client(daemon.socket) as client:
        with pytest.raises(energyd.InvalidArgument) as e:
            client.energy(10**12, 10**9)
        assert e.value.code == "InvalidArgument"
        with pytest.raises(energyd.EnergydError):
            client.breakdown(2**31)
        # The connection is still usable after an error answer.
        assert client.status()["user_mode"] is True


def as_nobody(code, daemon):
    """Runs `code` with this package as uid 65534 (nobody) and returns its
    stdout: the daemon runs as root, so this is another user."""
    out = subprocess.run(
        [sys.executable if os.access(sys.executable, os.X_OK) else "python3", "-c", code],
        env={"PYTHONPATH": PKG, "SOCK": daemon.socket, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        user=65534,
        group=65534,
        cwd="/",
        executable="/usr/bin/python3",
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_permission_errors_are_clear_exceptions(daemon):
    # Another user's process (pid 1, root's) is not theirs to observe.
    code = (
        "import os, energyd\n"
        "c = energyd.Client(os.environ['SOCK'])\n"
        "try:\n"
        "    c.register_process(1)\n"
        "    print('no error')\n"
        "except energyd.PermissionDenied as e:\n"
        "    print('PermissionDenied', e.code)\n"
    )
    assert as_nobody(code, daemon) == "PermissionDenied PermissionDenied"
    # A socket the user may not open.
    hidden = os.path.join(daemon.dir, "private")
    os.mkdir(hidden, 0o700)
    os.symlink(daemon.socket, os.path.join(hidden, "energyd.sock"))
    code = (
        "import energyd\n"
        f"try:\n    energyd.Client({os.path.join(hidden, 'energyd.sock')!r})\n"
        "except energyd.PermissionDenied as e:\n    print('PermissionDenied', 'no permission' in str(e))\n"
    )
    assert as_nobody(code, daemon) == "PermissionDenied True"
