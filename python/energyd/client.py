"""A blocking client of the energyd socket, speaking the wire format in
`_wire`. One request, one response, in order."""

import errno
import os
import socket
import struct
import time

from . import _wire
from .errors import DaemonNotRunning, PermissionDenied, ProtocolError, from_daemon

SYSTEM_SOCKET = "/run/energyd/energyd.sock"
# The frame limit of the protocol; batches are split well below it.
SPANS_PER_FRAME = 16_384


def user_socket():
    """energyd --user's default socket: $XDG_RUNTIME_DIR/energyd.sock, or
    /tmp/energyd-<uid>.sock without a runtime directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "energyd.sock")
    return f"/tmp/energyd-{os.geteuid()}.sock"


def default_socket():
    """$ENERGYD_SOCKET, else the user-mode socket if it exists, else the
    system one (the same choice as energyctl)."""
    explicit = os.environ.get("ENERGYD_SOCKET")
    if explicit:
        return explicit
    user = user_socket()
    return user if os.path.exists(user) else SYSTEM_SOCKET


def now_ns():
    """CLOCK_MONOTONIC in ns: the clock of every energyd timestamp."""
    return time.monotonic_ns()


class Client:
    """A connected, handshaken client. Use as a context manager or close()."""

    def __init__(self, socket_path=None, client_name="energyd-python", timeout_s=30.0):
        self.socket_path = socket_path or default_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise DaemonNotRunning(
                f"energyd is not running at {self.socket_path} ({e.strerror}); "
                "start it with `energyd --user` or give its socket",
            ) from None
        except PermissionError as e:
            sock.close()
            raise PermissionDenied(
                f"no permission to connect to energyd at {self.socket_path} ({e.strerror})"
            ) from None
        except OSError as e:
            sock.close()
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise DaemonNotRunning(f"energyd is not running at {self.socket_path}: {e}") from None
            raise
        self._sock = sock
        hello = self.call(
            ("Hello", {"protocol_version": _wire.PROTOCOL_VERSION, "client_name": client_name}),
            "Hello",
        )
        self.daemon_version = hello["daemon_version"]
        self.peer = hello["peer"]
        self.policy = hello["policy"]

    # -- plumbing --------------------------------------------------------
    def call(self, request, expect):
        """Sends one request, reads one response; returns the payload of a
        response of variant `expect`; a daemon error raises."""
        if isinstance(request, _wire.RawRequest):
            payload = request.payload
        else:
            payload = _wire.encode(_wire.REQUEST, request)
        try:
            self._sock.sendall(_wire.frame(payload))
            header = self._read_exact(4)
            (length,) = struct.unpack(">I", header)
            if length > _wire.MAX_FRAME_LEN:
                raise ProtocolError(f"energyd sent a frame of {length} bytes, over the limit")
            body = self._read_exact(length)
        except OSError as e:
            raise ProtocolError(f"connection to energyd failed: {e}") from None
        try:
            variant, value = _wire.decode(_wire.RESPONSE, body)
        except _wire.WireError as e:
            raise ProtocolError(f"cannot decode energyd's answer: {e}") from None
        if variant == "Error":
            raise from_daemon(value["code"][0], value["message"])
        if variant != expect:
            raise ProtocolError(f"expected {expect} from energyd, got {variant}")
        return value

    def _read_exact(self, n):
        chunks, left = [], n
        while left:
            chunk = self._sock.recv(left)
            if not chunk:
                raise ProtocolError("energyd closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests --------------------------------------------------------
    def status(self):
        return self.call("Status", "Status")

    def sources(self):
        return self.call("ListSources", "Sources")

    def energy(self, start_ns, end_ns):
        """Machine-wide energy per source over [start_ns, end_ns]."""
        return self.call(("Energy", {"from": start_ns, "to": end_ns}), "Energy")

    def register_process(self, pid, include_children=True):
        return self.call(
            ("RegisterProcess", {"pid": pid, "include_children": include_children}), "Registered"
        )

    def unregister_process(self, pid):
        return self.call(("UnregisterProcess", {"pid": pid}), "Registered")

    def submit_spans(self, names, spans):
        """Sends spans [(name_index, start_ns, end_ns, pid, tid), ...] named
        by `names`, split into frames; returns (accepted, rejected)."""
        accepted = rejected = 0
        for i in range(0, len(spans), SPANS_PER_FRAME):
            chunk = spans[i : i + SPANS_PER_FRAME]
            answer = self.call(_wire.RawRequest(_wire.submit_spans_payload(names, chunk)),
                               "SpansAccepted")
            accepted += answer["accepted"]
            rejected += answer["rejected"]
        return accepted, rejected

    def breakdown(self, pid, start_ns=None, end_ns=None):
        """Energy of a tracked process per domain and per kernel (span) type."""
        return self.call(("Breakdown", {"pid": pid, "from": start_ns, "to": end_ns}), "Breakdown")
