"""Exceptions for the daemon's answers and for reaching it at all."""


class EnergydError(Exception):
    """Any failure talking to energyd. `code` is the daemon's error code
    (e.g. "PermissionDenied") when the daemon answered with one."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class DaemonNotRunning(EnergydError):
    """Nothing listens on the socket (or it does not exist)."""


class PermissionDenied(EnergydError):
    """The socket or the process is not yours to use."""


class RateLimited(EnergydError):
    """Too many requests for this uid: wait and retry."""


class NotFound(EnergydError):
    """The process, source or interval is unknown (e.g. not tracked)."""


class InvalidArgument(EnergydError):
    """The arguments are invalid (e.g. from > to)."""


class VersionMismatch(EnergydError):
    """Client and daemon speak different protocol versions: upgrade one."""


class ResourceExhausted(EnergydError):
    """The daemon is at a configured capacity (tracked processes, connections)."""


class ProtocolError(EnergydError):
    """A frame that does not decode, an unexpected answer, a closed connection."""


_BY_CODE = {
    "PermissionDenied": PermissionDenied,
    "RateLimited": RateLimited,
    "NotFound": NotFound,
    "InvalidArgument": InvalidArgument,
    "VersionMismatch": VersionMismatch,
    "ResourceExhausted": ResourceExhausted,
    "HandshakeRequired": ProtocolError,
    "MalformedFrame": ProtocolError,
    "FrameTooLarge": ProtocolError,
}


def from_daemon(code, message):
    """The exception for a daemon's `Error {code, message}` answer."""
    cls = _BY_CODE.get(code, EnergydError)
    return cls(f"energyd refused the request ({code}): {message}", code=code)
