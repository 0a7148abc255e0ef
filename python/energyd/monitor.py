"""Named measurement windows, as Zeus users know them.

    from energyd import EnergyMonitor
    monitor = EnergyMonitor()              # tracks this process
    monitor.begin_window("epoch")
    train_one_epoch()
    m = monitor.end_window("epoch")
    print(m.energy_j, "±", m.uncertainty_j, "J", m.provenance)

    with monitor.window("eval") as w:
        evaluate()
    print(w.result)

Windows are independent: they may nest or overlap; one name is open once
at a time. A window's energy is this process's (and its children's)
energy as energyd attributes it, per domain, with the daemon's
uncertainty and provenance (measured / estimated / simulated), plus the
machine-wide energy of each source over the window (coarsened by the
daemon for unprivileged callers).
"""

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

from .client import Client, now_ns
from .errors import EnergydError

_PROVENANCE_ORDER = {"measured": 0, "estimated": 1, "simulated": 2}


def weakest(provenances):
    """The weakest provenance of parts (a sum is no better than its worst part)."""
    ps = list(provenances)
    return max(ps, key=lambda p: _PROVENANCE_ORDER[p]) if ps else "none"


def domain_label(domain):
    """("package", {"index": 0}) -> "package-0"; ("cpu", None) -> "cpu"."""
    name, value = domain
    if value is None:
        return name
    if isinstance(value, dict):
        return f"{name}-{next(iter(value.values()))}"
    return str(value)


def additive(domain, all_domains):
    """Whether a domain adds to the total without counting another twice
    (the rule energyctl uses): cores and uncore are parts of their package;
    psys holds everything else."""
    kind = domain[0]
    has_psys = any(d[0] == "psys" for d in all_domains)
    if kind in ("core", "uncore"):
        return False
    if kind in ("package", "dram", "cpu"):
        return not has_psys
    return True


@dataclass
class DomainEnergy:
    """This process's energy in one domain (source)."""

    source: str
    domain: str
    energy_j: float
    uncertainty_j: float
    dynamic_j: float
    activity_share: float
    machine_j: float
    provenance: str
    in_total: bool


@dataclass
class SourceEnergy:
    """Machine-wide energy of one source over the window."""

    source: str
    energy_j: float
    uncertainty_j: float
    coverage: float
    provenance: str


@dataclass
class Measurement:
    """The result of one window."""

    name: str
    start_ns: int
    end_ns: int
    time_s: float
    energy_j: float
    uncertainty_j: float
    provenance: str
    domains: List[DomainEnergy] = field(default_factory=list)
    machine: List[SourceEnergy] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def as_row(self):
        """A flat dict for a DataFrame row."""
        return {
            "window": self.name,
            "time_s": self.time_s,
            "energy_j": self.energy_j,
            "uncertainty_j": self.uncertainty_j,
            "provenance": self.provenance,
            **{f"energy_j[{d.domain}]": d.energy_j for d in self.domains},
        }


class WindowHandle:
    """What `EnergyMonitor.window()` yields; `result` is set on exit."""

    def __init__(self, name):
        self.name = name
        self.result: Optional[Measurement] = None


class EnergyMonitor:
    """Measures named windows of this process's energy through energyd.

    socket: the daemon's socket (default: $ENERGYD_SOCKET, the user-mode
    socket, or the system one). pid: the process whose energy is measured
    (default: this one), tracked with its children. settle_s: after a
    window ends, how long to let the daemon take its next activity sample
    (it samples CPU time every 10 ms) before asking.
    """

    def __init__(self, socket=None, pid=None, include_children=True, settle_s=0.03,
                 client_name="energyd-python monitor"):
        self.client = Client(socket, client_name=client_name)
        self.pid = pid if pid is not None else os.getpid()
        self.settle_s = settle_s
        self.client.register_process(self.pid, include_children)
        self._open = {}
        sources = self.client.sources()
        self._sources = {s["id"]: s for s in sources}

    def begin_window(self, name):
        """Opens window `name` now. Raises ValueError if it is already open."""
        if name in self._open:
            raise ValueError(f"window {name!r} is already open")
        self._open[name] = now_ns()

    def end_window(self, name) -> Measurement:
        """Closes window `name` and returns its measurement."""
        try:
            start = self._open.pop(name)
        except KeyError:
            raise ValueError(f"window {name!r} is not open") from None
        end = now_ns()
        if self.settle_s > 0:
            time.sleep(self.settle_s)
        return self.measure(name, start, end)

    @contextlib.contextmanager
    def window(self, name):
        """`with monitor.window("epoch") as w: ...`; then `w.result`."""
        handle = WindowHandle(name)
        self.begin_window(name)
        try:
            yield handle
        finally:
            handle.result = self.end_window(name)

    def measure(self, name, start_ns, end_ns) -> Measurement:
        """The measurement of [start_ns, end_ns] (CLOCK_MONOTONIC ns)."""
        b = self.client.breakdown(self.pid, start_ns, end_ns)
        return self._measurement(name, start_ns, end_ns, b)

    def _measurement(self, name, start_ns, end_ns, breakdown):
        domains = []
        all_domains = [s["domain"] for s in self._sources.values()]
        for d in breakdown["domains"]:
            info = self._sources.get(d["source"])
            if info is None:
                continue
            domains.append(
                DomainEnergy(
                    source=info["name"],
                    domain=domain_label(info["domain"]),
                    energy_j=d["process_j"],
                    uncertainty_j=d["uncertainty_j"],
                    dynamic_j=d["process_dynamic_j"],
                    activity_share=d["activity_share"],
                    machine_j=d["machine_j"],
                    provenance=d["provenance"][0],
                    in_total=additive(info["domain"], all_domains),
                )
            )
        counted = [d for d in domains if d.in_total]
        machine = []
        try:
            report = self.client.energy(start_ns, end_ns)
            for e in report["sources"]:
                info = self._sources.get(e["source"], {"name": str(e["source"])})
                machine.append(
                    SourceEnergy(
                        source=info["name"],
                        energy_j=e["joules"],
                        uncertainty_j=e["uncertainty_j"],
                        coverage=e["coverage"],
                        provenance=e["provenance"][0],
                    )
                )
        except EnergydError as e:
            breakdown["notes"].append(f"machine-wide energy not available: {e}")
        return Measurement(
            name=name,
            start_ns=breakdown["from"],
            end_ns=breakdown["to"],
            time_s=(breakdown["to"] - breakdown["from"]) * 1e-9,
            energy_j=sum(d.energy_j for d in counted),
            uncertainty_j=sum(d.uncertainty_j**2 for d in counted) ** 0.5,
            provenance=weakest(d.provenance for d in counted),
            domains=domains,
            machine=machine,
            notes=list(breakdown["notes"]),
        )

    def close(self):
        """Stops tracking (ignoring a daemon that is already gone) and disconnects."""
        try:
            self.client.unregister_process(self.pid)
        except EnergydError:
            pass
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
