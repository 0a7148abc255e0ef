//! A small blocking client for the energyd socket, used by `energyctl`,
//! `nas-client`, `calibration` and the integration tests. It needs no async
//! runtime, so a training loop can own one without pulling in tokio.

use crate::frame::{self, FrameError, MAX_FRAME_LEN};
use crate::protocol::{
    Breakdown, CgroupEnergy, CgroupSelector, CgroupTracking, ClientPolicy, DaemonStatus,
    EnergyReport, ErrorCode, PeerInfo, PowerSnapshot, Request, Response, SpanBatch,
    PROTOCOL_VERSION,
};
use crate::source::SourceInfo;
use crate::time::MonotonicNs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Spans per frame when a large batch is split (keeps frames well under
/// [`MAX_FRAME_LEN`] even with long kernel names).
pub const SPANS_PER_FRAME: usize = 16_384;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to energyd at {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Framing or i/o failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The daemon closed the connection.
    #[error("energyd closed the connection")]
    Closed,
    /// The daemon answered with an error.
    #[error("energyd refused the request ({code}): {message}")]
    Daemon {
        /// Error code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// The daemon answered with a response of the wrong kind.
    #[error("unexpected response from energyd: {0}")]
    Unexpected(String),
    /// The daemon accepted the connection but did not answer in time: it
    /// is running but busy (or stuck), which is not the same as absent.
    #[error("energyd did not answer within {} s (busy or stuck; the connection is up)", .0.as_secs_f64())]
    Timeout(Duration),
}

impl ClientError {
    /// The daemon is unreachable or the connection to it is gone (not
    /// running, restarted, crashed): reconnecting later may help, and a
    /// request sent on this connection may or may not have been served.
    pub fn daemon_gone(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Closed => true,
            ClientError::Frame(FrameError::Truncated { .. }) => true,
            ClientError::Frame(FrameError::Io(e)) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }

    /// The daemon refused the request for now (rate limit, or a resource
    /// such as connection or breakdown slots exhausted): retry later.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            ClientError::Daemon {
                code: ErrorCode::RateLimited | ErrorCode::ResourceExhausted,
                ..
            }
        )
    }
}

/// How long a client waits for each answer by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected, handshaken client.
pub struct Client {
    stream: UnixStream,
    /// The daemon's version string.
    pub daemon_version: String,
    /// This client as the daemon sees it.
    pub peer: PeerInfo,
    /// Limits that apply to this client.
    pub policy: ClientPolicy,
}

impl Client {
    /// Connects to `path` and performs the version handshake.
    pub fn connect(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        Self::connect_with_version(path, client_name, PROTOCOL_VERSION)
    }

    /// Like [`Client::connect`] with an explicit protocol version (tests of
    /// the mismatch path use this).
    pub fn connect_with_version(
        path: &Path,
        client_name: &str,
        version: u32,
    ) -> Result<Client, ClientError> {
        Self::connect_with(path, client_name, version, DEFAULT_READ_TIMEOUT)
    }

    /// Like [`Client::connect`], waiting at most `read_timeout` for each
    /// answer ([`ClientError::Timeout`] past it).
    pub fn connect_with_timeout(
        path: &Path,
        client_name: &str,
        read_timeout: Duration,
    ) -> Result<Client, ClientError> {
        Self::connect_with(path, client_name, PROTOCOL_VERSION, read_timeout)
    }

    fn connect_with(
        path: &Path,
        client_name: &str,
        version: u32,
        read_timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        // A daemon that stops answering must not hang a training loop forever.
        let _ = stream.set_read_timeout(Some(read_timeout));
        let mut client = Client {
            stream,
            daemon_version: String::new(),
            peer: PeerInfo {
                pid: 0,
                uid: 0,
                gid: 0,
                privileged: false,
            },
            policy: ClientPolicy {
                min_window_ns: 0,
                energy_quantum_j: 0.0,
                requests_per_sec: 0.0,
            },
        };
        match client.call(&Request::Hello {
            protocol_version: version,
            client_name: client_name.to_owned(),
        })? {
            Response::Hello {
                daemon_version,
                peer,
                policy,
                ..
            } => {
                client.daemon_version = daemon_version;
                client.peer = peer;
                client.policy = policy;
                Ok(client)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and reads one response; a daemon error becomes
    /// [`ClientError::Daemon`].
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        if let Err(e) = frame::write_frame(&mut self.stream, req) {
            // A daemon that refuses a connection (ResourceExhausted) answers
            // and closes at once, possibly before our request is written:
            // its answer is still there to read, and says more than EPIPE.
            if let Ok(Some(Response::Error { code, message })) =
                frame::read_frame::<_, Response>(&mut self.stream, MAX_FRAME_LEN)
            {
                return Err(ClientError::Daemon { code, message });
            }
            return Err(e.into());
        }
        let answer = frame::read_frame::<_, Response>(&mut self.stream, MAX_FRAME_LEN).map_err(
            |e| match e {
                FrameError::Io(io)
                    if matches!(
                        io.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    let timeout = self
                        .stream
                        .read_timeout()
                        .ok()
                        .flatten()
                        .unwrap_or(DEFAULT_READ_TIMEOUT);
                    ClientError::Timeout(timeout)
                }
                other => ClientError::Frame(other),
            },
        )?;
        match answer {
            None => Err(ClientError::Closed),
            Some(Response::Error { code, message }) => Err(ClientError::Daemon { code, message }),
            Some(resp) => Ok(resp),
        }
    }

    /// Daemon status: version, sources with statistics, current power.
    pub fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        match self.call(&Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The sources.
    pub fn sources(&mut self) -> Result<Vec<SourceInfo>, ClientError> {
        match self.call(&Request::ListSources)? {
            Response::Sources(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Current power per source.
    pub fn current_power(&mut self) -> Result<PowerSnapshot, ClientError> {
        match self.call(&Request::CurrentPower)? {
            Response::Power(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Machine-wide energy per source over `[from, to]`.
    pub fn energy(
        &mut self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<EnergyReport, ClientError> {
        match self.call(&Request::Energy { from, to })? {
            Response::Energy(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Starts tracking `pid` (and its children if asked).
    pub fn register_process(
        &mut self,
        pid: u32,
        include_children: bool,
    ) -> Result<(), ClientError> {
        match self.call(&Request::RegisterProcess {
            pid,
            include_children,
        })? {
            Response::Registered { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Stops tracking `pid`.
    pub fn unregister_process(&mut self, pid: u32) -> Result<(), ClientError> {
        match self.call(&Request::UnregisterProcess { pid })? {
            Response::Registered { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Submits spans, split into frames of at most [`SPANS_PER_FRAME`].
    /// Returns (accepted, rejected).
    pub fn submit_spans(&mut self, batch: &SpanBatch) -> Result<(u64, u64), ClientError> {
        let mut totals = (0u64, 0u64);
        for chunk in batch.spans.chunks(SPANS_PER_FRAME) {
            let part = SpanBatch {
                names: batch.names.clone(),
                spans: chunk.to_vec(),
            };
            match self.call(&Request::SubmitSpans(part))? {
                Response::SpansAccepted { accepted, rejected } => {
                    totals.0 += u64::from(accepted);
                    totals.1 += u64::from(rejected);
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(totals)
    }

    /// Submits one batch idempotently (see [`Request::SubmitSpansOnce`]):
    /// resending the same `batch_id` after a lost answer stores nothing
    /// twice. The batch must fit one frame ([`SPANS_PER_FRAME`] spans).
    /// Returns (accepted, rejected).
    pub fn submit_spans_once(
        &mut self,
        batch_id: u64,
        batch: &SpanBatch,
    ) -> Result<(u64, u64), ClientError> {
        match self.call(&Request::SubmitSpansOnce {
            batch_id,
            batch: batch.clone(),
        })? {
            Response::SpansAccepted { accepted, rejected } => {
                Ok((u64::from(accepted), u64::from(rejected)))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Per-domain and per-kernel energy of a tracked process.
    pub fn breakdown(
        &mut self,
        pid: u32,
        from: Option<MonotonicNs>,
        to: Option<MonotonicNs>,
    ) -> Result<Breakdown, ClientError> {
        match self.call(&Request::Breakdown { pid, from, to })? {
            Response::Breakdown(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Starts tracking a control group (see [`Request::TrackCgroup`]).
    pub fn track_cgroup(&mut self, cgroup: &CgroupSelector) -> Result<CgroupTracking, ClientError> {
        match self.call(&Request::TrackCgroup {
            cgroup: cgroup.clone(),
        })? {
            Response::CgroupTracking(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Stops tracking a control group.
    pub fn untrack_cgroup(
        &mut self,
        cgroup: &CgroupSelector,
    ) -> Result<CgroupTracking, ClientError> {
        match self.call(&Request::UntrackCgroup {
            cgroup: cgroup.clone(),
        })? {
            Response::CgroupTracking(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Per-domain energy of a tracked control group.
    pub fn cgroup_energy(
        &mut self,
        cgroup: &CgroupSelector,
        from: Option<MonotonicNs>,
        to: Option<MonotonicNs>,
    ) -> Result<CgroupEnergy, ClientError> {
        match self.call(&Request::CgroupEnergy {
            cgroup: cgroup.clone(),
            from,
            to,
        })? {
            Response::CgroupEnergy(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes to the live power stream; the returned iterator yields one
    /// snapshot per update until the daemon closes or an error occurs.
    pub fn subscribe(mut self, interval_ns: u64) -> Result<PowerStream, ClientError> {
        frame::write_frame(&mut self.stream, &Request::Subscribe { interval_ns })?;
        Ok(PowerStream {
            stream: self.stream,
        })
    }
}

/// Live power updates from [`Client::subscribe`].
pub struct PowerStream {
    stream: UnixStream,
}

impl Iterator for PowerStream {
    type Item = Result<PowerSnapshot, ClientError>;
    fn next(&mut self) -> Option<Self::Item> {
        match frame::read_frame::<_, Response>(&mut self.stream, MAX_FRAME_LEN) {
            Ok(None) => None,
            Ok(Some(Response::PowerUpdate(p))) => Some(Ok(p)),
            Ok(Some(Response::Error { code, message })) => {
                Some(Err(ClientError::Daemon { code, message }))
            }
            Ok(Some(other)) => Some(Err(unexpected(other))),
            Err(e) => Some(Err(e.into())),
        }
    }
}

fn unexpected(resp: Response) -> ClientError {
    let text = format!("{resp:?}");
    ClientError::Unexpected(text.chars().take(200).collect())
}
