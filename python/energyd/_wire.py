"""energyd's wire format in pure Python: frames of postcard-encoded messages.

A frame is a 4-byte big-endian payload length (at most 1 MiB) and the
payload: one message in postcard 1.x encoding (ARCHITECTURE.md, "Wire
format"; the message types and their declaration order are
shared/src/protocol.rs and shared/src/source.rs). Types are described
below as small schemas, in the order of the Rust declarations, and one
generic encoder/decoder walks them. Only what the client needs is encoded
(requests) and everything a daemon may answer is decoded (responses).

Postcard, in short: unsigned integers of 16 bits and more, lengths and
enum variant indexes are LEB128 varints; u8 is one byte; f64 is 8 bytes
little-endian; bool one byte; String and Vec a varint length and the
items; Option a 0/1 byte and the value; structs their fields in order;
enums the variant index and the variant's fields; newtypes their inner
value.
"""

import struct

MAX_FRAME_LEN = 1 << 20
PROTOCOL_VERSION = 2


class WireError(Exception):
    """A payload that does not decode as the expected message."""


# --- schemas -------------------------------------------------------------
# A schema is one of: "u8", "u32", "u64", "f64", "bool", "str",
# ("option", S), ("vec", S), ("struct", [(field, S), ...]),
# ("enum", [(variant, S or None), ...]) where a variant's S is a struct
# schema (named fields), a tuple of schemas (tuple variant) or None (unit).

MONOTONIC = "u64"
SOURCE_ID = "u32"

PROVENANCE = ("enum", [("measured", None), ("estimated", None), ("simulated", None)])
DOMAIN = (
    "enum",
    [
        ("package", ("struct", [("index", "u32")])),
        ("core", ("struct", [("package", "u32")])),
        ("uncore", ("struct", [("package", "u32")])),
        ("dram", ("struct", [("package", "u32")])),
        ("psys", None),
        ("gpu", ("struct", [("index", "u32")])),
        ("cpu", None),
        ("other", ("str",)),
    ],
)
SOURCE_KIND = (
    "enum",
    [
        ("rapl-powercap", None),
        ("rapl-msr", None),
        ("rapl-perf", None),
        ("nvml", None),
        ("estimated-cpu", None),
        ("simulated", None),
    ],
)
READING_KIND = (
    "enum",
    [
        ("cumulative_energy", None),
        ("instant_power", None),
        ("averaged_power", ("struct", [("window_ns", "u64")])),
    ],
)
SOURCE_INFO = (
    "struct",
    [
        ("id", SOURCE_ID),
        ("name", "str"),
        ("domain", DOMAIN),
        ("kind", SOURCE_KIND),
        ("provenance", PROVENANCE),
        ("reading", READING_KIND),
        ("period_ns", "u64"),
        ("resolution_j", "f64"),
        ("update_period_ns", "u64"),
    ],
)
SOURCE_STATS = (
    "struct",
    [
        ("samples", "u64"),
        ("rate_hz", "f64"),
        ("overruns", "u64"),
        ("read_errors", "u64"),
        ("wraps", "u64"),
        ("glitches", "u64"),
        ("stuck", "bool"),
    ],
)
PEER_INFO = (
    "struct",
    [("pid", "u32"), ("uid", "u32"), ("gid", "u32"), ("privileged", "bool")],
)
CLIENT_POLICY = (
    "struct",
    [("min_window_ns", "u64"), ("energy_quantum_j", "f64"), ("requests_per_sec", "f64")],
)
POWER_READING = (
    "struct",
    [("source", SOURCE_ID), ("watts", "f64"), ("provenance", PROVENANCE)],
)
POWER_SNAPSHOT = (
    "struct",
    [("from", MONOTONIC), ("to", MONOTONIC), ("readings", ("vec", POWER_READING))],
)
DAEMON_STATUS = (
    "struct",
    [
        ("daemon_version", "str"),
        ("protocol_version", "u32"),
        ("user_mode", "bool"),
        ("started_at", MONOTONIC),
        ("now", MONOTONIC),
        ("sources", ("vec", ("struct", [("info", SOURCE_INFO), ("stats", SOURCE_STATS)]))),
        ("power", POWER_SNAPSHOT),
        ("tracked_processes", "u32"),
    ],
)
SOURCE_ENERGY = (
    "struct",
    [
        ("source", SOURCE_ID),
        ("joules", "f64"),
        ("coverage", "f64"),
        ("uncertainty_j", "f64"),
        ("provenance", PROVENANCE),
        ("below_update_period", "bool"),
    ],
)
ENERGY_REPORT = (
    "struct",
    [("from", MONOTONIC), ("to", MONOTONIC), ("sources", ("vec", SOURCE_ENERGY))],
)
SPAN_RECORD = (
    "struct",
    [("name", "u32"), ("start", MONOTONIC), ("end", MONOTONIC), ("pid", "u32"), ("tid", "u32")],
)
SPAN_BATCH = ("struct", [("names", ("vec", "str")), ("spans", ("vec", SPAN_RECORD))])
ATTRIBUTION_METHOD = (
    "enum",
    [("integrated", None), ("regression", None), ("deconvolved", None), ("insufficient", None)],
)
DOMAIN_SHARE = (
    "struct",
    [
        ("source", SOURCE_ID),
        ("machine_j", "f64"),
        ("process_j", "f64"),
        ("process_dynamic_j", "f64"),
        ("activity_share", "f64"),
        ("unattributed_j", "f64"),
        ("uncertainty_j", "f64"),
        ("provenance", PROVENANCE),
    ],
)
KERNEL_ENERGY = (
    "struct",
    [
        ("name", "str"),
        ("count", "u64"),
        ("total_time_ns", "u64"),
        ("energy_j", ("option", "f64")),
        ("share", ("option", "f64")),
        ("uncertainty_j", "f64"),
        ("confidence", "f64"),
        ("method", ATTRIBUTION_METHOD),
    ],
)
BREAKDOWN = (
    "struct",
    [
        ("pid", "u32"),
        ("from", MONOTONIC),
        ("to", MONOTONIC),
        ("domains", ("vec", DOMAIN_SHARE)),
        ("kernels", ("vec", KERNEL_ENERGY)),
        ("notes", ("vec", "str")),
    ],
)
ERROR_CODE = (
    "enum",
    [
        ("VersionMismatch", None),
        ("HandshakeRequired", None),
        ("MalformedFrame", None),
        ("FrameTooLarge", None),
        ("PermissionDenied", None),
        ("RateLimited", None),
        ("NotFound", None),
        ("InvalidArgument", None),
        ("ResourceExhausted", None),
        ("Internal", None),
    ],
)

REQUEST = (
    "enum",
    [
        ("Hello", ("struct", [("protocol_version", "u32"), ("client_name", "str")])),
        ("Status", None),
        ("ListSources", None),
        ("CurrentPower", None),
        ("Energy", ("struct", [("from", MONOTONIC), ("to", MONOTONIC)])),
        ("RegisterProcess", ("struct", [("pid", "u32"), ("include_children", "bool")])),
        ("UnregisterProcess", ("struct", [("pid", "u32")])),
        ("SubmitSpans", (SPAN_BATCH,)),
        (
            "Breakdown",
            (
                "struct",
                [("pid", "u32"), ("from", ("option", MONOTONIC)), ("to", ("option", MONOTONIC))],
            ),
        ),
        ("Subscribe", ("struct", [("interval_ns", "u64")])),
    ],
)

RESPONSE = (
    "enum",
    [
        (
            "Hello",
            (
                "struct",
                [
                    ("protocol_version", "u32"),
                    ("daemon_version", "str"),
                    ("peer", PEER_INFO),
                    ("policy", CLIENT_POLICY),
                ],
            ),
        ),
        ("Status", (DAEMON_STATUS,)),
        ("Sources", (("vec", SOURCE_INFO),)),
        ("Power", (POWER_SNAPSHOT,)),
        ("Energy", (ENERGY_REPORT,)),
        ("Registered", ("struct", [("pid", "u32"), ("tracked", "bool")])),
        ("SpansAccepted", ("struct", [("accepted", "u32"), ("rejected", "u32")])),
        ("Breakdown", (BREAKDOWN,)),
        ("PowerUpdate", (POWER_SNAPSHOT,)),
        ("Error", ("struct", [("code", ERROR_CODE), ("message", "str")])),
    ],
)

# --- encoding ------------------------------------------------------------

_U_MAX = {"u8": 0xFF, "u32": 0xFFFF_FFFF, "u64": 0xFFFF_FFFF_FFFF_FFFF}


def _varint(value, out):
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def encode(schema, value, out=None):
    """Encodes `value` (dicts for structs, (variant, payload) or a variant
    name for enums, lists, None/value for options) into a bytearray."""
    if out is None:
        out = bytearray()
    if isinstance(schema, str):
        if schema in _U_MAX:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U_MAX[schema]:
                raise WireError(f"{value!r} is not a {schema}")
            if schema == "u8":
                out.append(value)
            else:
                _varint(value, out)
        elif schema == "f64":
            out += struct.pack("<d", float(value))
        elif schema == "bool":
            out.append(1 if value else 0)
        elif schema == "str":
            data = str(value).encode("utf-8")
            _varint(len(data), out)
            out += data
        else:
            raise WireError(f"unknown schema {schema!r}")
        return out
    tag = schema[0]
    if tag == "option":
        if value is None:
            out.append(0)
        else:
            out.append(1)
            encode(schema[1], value, out)
    elif tag == "vec":
        _varint(len(value), out)
        for item in value:
            encode(schema[1], item, out)
    elif tag == "struct":
        for field, field_schema in schema[1]:
            encode(field_schema, value[field], out)
    elif tag == "enum":
        variant, payload = (value, None) if isinstance(value, str) else value
        for index, (name, variant_schema) in enumerate(schema[1]):
            if name == variant:
                _varint(index, out)
                if variant_schema is None:
                    pass
                elif isinstance(variant_schema, tuple) and variant_schema and variant_schema[0] == "struct":
                    encode(variant_schema, payload, out)
                else:
                    items = payload if len(variant_schema) > 1 else (payload,)
                    for s, v in zip(variant_schema, items):
                        encode(s, v, out)
                break
        else:
            raise WireError(f"no variant {variant!r}")
    else:
        raise WireError(f"unknown schema {schema!r}")
    return out


# --- decoding ------------------------------------------------------------


class _Reader:
    def __init__(self, data):
        self.data = memoryview(data)
        self.pos = 0

    def byte(self):
        if self.pos >= len(self.data):
            raise WireError(f"payload ends at byte {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n):
        if self.pos + n > len(self.data):
            raise WireError(f"payload ends at byte {len(self.data)}, {n} bytes needed at {self.pos}")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def varint(self, limit):
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 70:
                raise WireError(f"varint too long at byte {self.pos}")
        if value > limit:
            raise WireError(f"varint {value} out of range at byte {self.pos}")
        return value


def _decode(schema, r):
    if isinstance(schema, str):
        if schema == "u8":
            return r.byte()
        if schema in _U_MAX:
            return r.varint(_U_MAX[schema])
        if schema == "f64":
            return struct.unpack("<d", r.take(8))[0]
        if schema == "bool":
            b = r.byte()
            if b > 1:
                raise WireError(f"bool byte {b} at {r.pos}")
            return b == 1
        if schema == "str":
            n = r.varint(MAX_FRAME_LEN)
            try:
                return r.take(n).decode("utf-8")
            except UnicodeDecodeError as e:
                raise WireError(f"string is not UTF-8: {e}") from None
        raise WireError(f"unknown schema {schema!r}")
    tag = schema[0]
    if tag == "option":
        flag = r.byte()
        if flag == 0:
            return None
        if flag != 1:
            raise WireError(f"option byte {flag} at {r.pos}")
        return _decode(schema[1], r)
    if tag == "vec":
        n = r.varint(MAX_FRAME_LEN)
        return [_decode(schema[1], r) for _ in range(n)]
    if tag == "struct":
        return {field: _decode(s, r) for field, s in schema[1]}
    if tag == "enum":
        index = r.varint(len(schema[1]) - 1)
        name, variant_schema = schema[1][index]
        if variant_schema is None:
            return (name, None)
        if variant_schema[0] == "struct":
            return (name, _decode(variant_schema, r))
        values = tuple(_decode(s, r) for s in variant_schema)
        return (name, values[0] if len(values) == 1 else values)
    raise WireError(f"unknown schema {schema!r}")


def decode(schema, payload):
    """Decodes one whole payload; trailing bytes are an error."""
    r = _Reader(payload)
    value = _decode(schema, r)
    if r.pos != len(payload):
        raise WireError(f"{len(payload) - r.pos} trailing bytes after the message")
    return value


def frame(payload):
    """The frame of one payload: 4-byte big-endian length, then the bytes."""
    if len(payload) > MAX_FRAME_LEN:
        raise WireError(f"message of {len(payload)} bytes exceeds the frame limit {MAX_FRAME_LEN}")
    return struct.pack(">I", len(payload)) + bytes(payload)


class RawRequest:
    """A request already encoded (the fast path for span batches)."""

    def __init__(self, payload):
        self.payload = payload


def _varint_bytes(value):
    out = bytearray()
    _varint(value, out)
    return bytes(out)


def submit_spans_payload(names, spans):
    """`Request::SubmitSpans` for [(name index, start, end, pid, tid)], the
    same bytes as encode(REQUEST, ("SubmitSpans", ...)) at a fraction of the
    cost: a training step makes hundreds of spans."""
    out = bytearray()
    _varint(7, out)  # variant index of SubmitSpans
    _varint(len(names), out)
    for name in names:
        data = str(name).encode("utf-8")
        _varint(len(data), out)
        out += data
    _varint(len(spans), out)
    cache = {}
    for record in spans:
        for v in record:
            if not isinstance(v, int) or v < 0 or v > 0xFFFF_FFFF_FFFF_FFFF:
                raise WireError(f"span field {v!r} is not an unsigned integer")
            b = cache.get(v) if v < 1 << 32 else None
            if b is None:
                b = _varint_bytes(v)
                if v < 1 << 32:
                    cache[v] = b
            out += b
    return out
