"""The pure-Python wire format against byte vectors worked out from the
postcard specification and the Rust declarations (shared/src/protocol.rs)."""

import struct

import pytest

from energyd import _wire


def test_hello_request_bytes():
    payload = _wire.encode(_wire.REQUEST, ("Hello", {"protocol_version": 1, "client_name": "py"}))
    # variant 0, version 1 (varint), "py" as length 2 + bytes.
    assert bytes(payload) == b"\x00\x01\x02py"
    assert _wire.frame(payload) == b"\x00\x00\x00\x05\x00\x01\x02py"


def test_varints_options_and_tuple_variants():
    payload = _wire.encode(
        _wire.REQUEST, ("Breakdown", {"pid": 300, "from": None, "to": 2**64 - 1})
    )
    # variant 8; 300 = 0xAC 0x02; None; Some(u64::MAX) = 1 + ten-byte varint.
    assert bytes(payload) == b"\x08\xac\x02\x00\x01" + b"\xff" * 9 + b"\x01"
    batch = {"names": ["mm"], "spans": [{"name": 0, "start": 1, "end": 128, "pid": 7, "tid": 8}]}
    spans = _wire.encode(_wire.REQUEST, ("SubmitSpans", batch))
    assert bytes(spans) == b"\x07\x01\x02mm\x01\x00\x01\x80\x01\x07\x08"


def test_responses_decode_and_bad_payloads_are_refused():
    hello = (
        b"\x00\x01\x05"
        + b"0.1.0"
        + b"\x07\x00\x00\x01"  # peer pid 7, uid 0, gid 0, privileged
        + b"\x00"
        + struct.pack("<d", 0.01)
        + struct.pack("<d", 50.0)
    )
    variant, value = _wire.decode(_wire.RESPONSE, hello)
    assert variant == "Hello"
    assert value["peer"] == {"pid": 7, "uid": 0, "gid": 0, "privileged": True}
    assert value["policy"]["energy_quantum_j"] == 0.01
    error = b"\x09\x04\x03bad"
    assert _wire.decode(_wire.RESPONSE, error) == (
        "Error",
        {"code": ("PermissionDenied", None), "message": "bad"},
    )
    with pytest.raises(_wire.WireError, match="trailing"):
        _wire.decode(_wire.RESPONSE, error + b"\x00")
    with pytest.raises(_wire.WireError, match="ends"):
        _wire.decode(_wire.RESPONSE, hello[:-3])
    with pytest.raises(_wire.WireError, match="out of range"):
        _wire.decode(_wire.RESPONSE, b"\x0a")
    with pytest.raises(_wire.WireError):
        _wire.encode(_wire.REQUEST, ("RegisterProcess", {"pid": -1, "include_children": True}))


def test_span_batch_fast_path_gives_the_same_bytes():
    names = ["aten::mm", "ProfilerStep#*"]
    spans = [(0, 1, 128, 7, 8), (1, 2**40, 2**40 + 5, 2**32 - 1, 0), (0, 5, 5, 7, 8)]
    slow = _wire.encode(_wire.REQUEST, ("SubmitSpans", {
        "names": names,
        "spans": [{"name": n, "start": s, "end": e, "pid": p, "tid": t} for n, s, e, p, t in spans],
    }))
    assert bytes(_wire.submit_spans_payload(names, spans)) == bytes(slow)
    with pytest.raises(_wire.WireError):
        _wire.submit_spans_payload(names, [(0, -1, 5, 7, 8)])
