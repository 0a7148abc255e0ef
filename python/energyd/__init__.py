"""Python client of energyd: energy per named window and per PyTorch op.

- EnergyMonitor: begin_window/end_window and `with monitor.window(name)`.
- energyd.torch_profiler.EnergyTraceHandler: a torch.profiler
  on_trace_ready that returns per-op self/total energy rows.
- Client: the socket protocol (pure Python, see energyd._wire).
- Exceptions: DaemonNotRunning, PermissionDenied, ... (energyd.errors).
"""

from .client import Client, default_socket, now_ns, user_socket
from .errors import (
    DaemonNotRunning,
    EnergydError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ResourceExhausted,
    VersionMismatch,
)
from .monitor import DomainEnergy, EnergyMonitor, Measurement, SourceEnergy

__all__ = [
    "Client",
    "DaemonNotRunning",
    "DomainEnergy",
    "EnergyMonitor",
    "EnergydError",
    "InvalidArgument",
    "Measurement",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "RateLimited",
    "ResourceExhausted",
    "SourceEnergy",
    "VersionMismatch",
    "default_socket",
    "now_ns",
    "user_socket",
]
__version__ = "0.1.0"
