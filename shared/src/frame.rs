//! Framing: each message is a 4-byte big-endian length `N` followed by `N`
//! bytes of postcard-encoded payload. `N` is at most [`MAX_FRAME_LEN`].
//!
//! An incomplete frame is an expected condition while bytes arrive
//! ([`decode`] returns `Ok(None)`); a frame that claims more than the limit,
//! does not decode, or has bytes left over after its message is an error.

use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};

/// Hard upper bound on a frame's payload. Large enough for a batch of about
/// 40 000 kernel spans; small enough that 256 connections each holding one
/// maximal frame cost the daemon at most 256 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Claimed payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    out = postcard::to_extend(msg, out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    out[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Reads the payload length from a header, checking it against `max`.
pub fn payload_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a payload (without its header) into a message. The whole payload
/// must be consumed.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decodes the first frame of `buf`. Returns the message and the number of
/// bytes it used, or `Ok(None)` if `buf` does not yet hold a whole frame.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = payload_len(header.try_into().expect("slice of HEADER_LEN"), max)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(payload)?, HEADER_LEN + len)))
}

/// Reads one frame from a blocking stream. `Ok(None)` on a clean end of
/// stream between frames.
pub fn read_frame<R: Read, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            got,
            expected: HEADER_LEN,
        });
    }
    let len = payload_len(header, max)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(FrameError::Truncated {
            got: HEADER_LEN + got,
            expected: HEADER_LEN + len,
        });
    }
    decode_payload(&payload).map(Some)
}

/// Writes one frame to a blocking stream.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let bytes = encode(msg)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, Response, SpanBatch};
    use crate::time::MonotonicNs;
    use proptest::prelude::*;

    #[test]
    fn round_trip_every_request_kind() {
        let mut batch = SpanBatch::default();
        batch.push("gemm_fwd", MonotonicNs(10), MonotonicNs(20), 1, 2);
        batch.push("relu_fwd", MonotonicNs(20), MonotonicNs(25), 1, 2);
        batch.push("gemm_fwd", MonotonicNs(30), MonotonicNs(40), 1, 3);
        assert_eq!(batch.names.len(), 2);
        let requests = vec![
            Request::Hello {
                protocol_version: 1,
                client_name: "t".into(),
            },
            Request::Status,
            Request::ListSources,
            Request::CurrentPower,
            Request::Energy {
                from: MonotonicNs(1),
                to: MonotonicNs(2),
            },
            Request::RegisterProcess {
                pid: 7,
                include_children: true,
            },
            Request::UnregisterProcess { pid: 7 },
            Request::SubmitSpans(batch),
            Request::Breakdown {
                pid: 7,
                from: None,
                to: Some(MonotonicNs(9)),
            },
            Request::Subscribe { interval_ns: 100 },
        ];
        for req in requests {
            let bytes = encode(&req).unwrap();
            let (back, used) = decode::<Request>(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
            assert_eq!(back, req);
            assert_eq!(used, bytes.len());
            // Every strict prefix is incomplete, never an error or a message.
            for cut in 0..bytes.len() {
                assert!(decode::<Request>(&bytes[..cut], MAX_FRAME_LEN)
                    .unwrap()
                    .is_none());
            }
        }
    }

    #[test]
    fn hello_is_variant_zero_with_version_first() {
        // The compatibility rule of the protocol: a Hello frame's payload
        // starts with discriminant 0 then the version as a varint.
        let bytes = encode(&Request::Hello {
            protocol_version: 3,
            client_name: String::new(),
        })
        .unwrap();
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 2], &[0, 3]);
        let bytes = encode(&Response::Error {
            code: crate::ErrorCode::Internal,
            message: "x".into(),
        })
        .unwrap();
        assert_ne!(bytes[HEADER_LEN], 0);
    }

    #[test]
    fn oversized_length_is_refused_before_reading_payload() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        match decode::<Request>(&header, MAX_FRAME_LEN) {
            Err(FrameError::TooLarge { len, .. }) => assert_eq!(len, MAX_FRAME_LEN + 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode(&Request::Status).unwrap();
        bytes.push(0);
        let len = (bytes.len() - HEADER_LEN) as u32;
        bytes[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode::<Request>(&bytes, MAX_FRAME_LEN),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn blocking_reader_reports_truncation_and_clean_eof() {
        let bytes = encode(&Request::ListSources).unwrap();
        let mut cursor = io::Cursor::new(bytes.clone());
        assert_eq!(
            read_frame::<_, Request>(&mut cursor, MAX_FRAME_LEN).unwrap(),
            Some(Request::ListSources)
        );
        assert!(read_frame::<_, Request>(&mut cursor, MAX_FRAME_LEN)
            .unwrap()
            .is_none());
        let mut cut = io::Cursor::new(bytes[..bytes.len() - 1].to_vec());
        assert!(matches!(
            read_frame::<_, Request>(&mut cut, MAX_FRAME_LEN),
            Err(FrameError::Truncated { .. })
        ));
        let mut cut_header = io::Cursor::new(vec![0u8, 0]);
        assert!(matches!(
            read_frame::<_, Request>(&mut cut_header, MAX_FRAME_LEN),
            Err(FrameError::Truncated { got: 2, .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]
        /// Arbitrary bytes never panic the decoder; whatever it accepts
        /// re-encodes to a frame that decodes to the same message.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((msg, used))) = decode::<Request>(&bytes, MAX_FRAME_LEN) {
                prop_assert!(used <= bytes.len());
                let again = encode(&msg).unwrap();
                let (back, _) = decode::<Request>(&again, MAX_FRAME_LEN).unwrap().unwrap();
                prop_assert_eq!(back, msg);
            }
            let _ = decode::<Response>(&bytes, MAX_FRAME_LEN);
        }

        /// Valid frames with a mutated byte never panic either.
        #[test]
        fn mutated_valid_frames_never_panic(pid in any::<u32>(), at in 0usize..64, val in any::<u8>()) {
            let mut bytes = encode(&Request::Breakdown { pid, from: Some(MonotonicNs(5)), to: None }).unwrap();
            let i = at % bytes.len();
            bytes[i] = val;
            let _ = decode::<Request>(&bytes, MAX_FRAME_LEN);
        }
    }
}
