//! Types both sides of the energyd socket use: CLOCK_MONOTONIC timestamps,
//! energy and power units, source descriptions with provenance, the request
//! and response messages, their framing, and a small blocking client.
//!
//! Invariant: every type that derives serde here is part of the wire
//! protocol (see `ARCHITECTURE.md`, "Wire format"). Internal types of the
//! daemon or of clients convert to and from these at the boundary.
#![warn(missing_docs)]

pub mod client;
pub mod frame;
pub mod paths;
pub mod protocol;
pub mod source;
pub mod time;
pub mod units;
pub mod uploader;

pub use protocol::{ErrorCode, Request, Response, PROTOCOL_VERSION};
pub use source::{Domain, Provenance, SourceId, SourceInfo};
pub use time::MonotonicNs;
pub use units::{Joules, Watts};
