//! The socket server: accepts connections, reads frames, runs the
//! handshake, dispatches requests to [`DaemonState`], streams power.
//!
//! Failure containment: everything a peer sends is untrusted. A frame over
//! the limit, a frame that does not decode, or a stream that ends inside a
//! frame ends *that* connection (after an error answer where one can still
//! be sent); other connections and the daemon carry on. No input path
//! panics (the fuzz tests in `tests/` hold us to it).

use crate::policy::{Caller, Coarsening, SlotRefusal};
use crate::service::{error, DaemonState};
use shared::frame::{self, FrameError, HEADER_LEN};
use shared::protocol::{ErrorCode, Request, Response};
use shared::MonotonicNs;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Fastest live power stream for privileged peers.
pub const MIN_STREAM_INTERVAL_NS: u64 = 10_000_000;

/// How long a refused peer is given to take its `ResourceExhausted` answer.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// Serves `listener` until `shutdown` completes, then stops accepting,
/// tells every connection to finish, and returns.
///
/// Every connection is accepted at once and given a slot by the peer's
/// uid (`ConnectionSlots`): a peer over its uid's cap, or finding every
/// slot open to it taken, is answered `ResourceExhausted` and closed, so
/// nobody waits in the kernel's backlog behind another uid's idle
/// connections, and privileged peers keep slots of their own.
pub async fn run(
    listener: UnixListener,
    state: Arc<DaemonState>,
    shutdown: impl Future<Output = ()>,
) {
    // Broadcasts shutdown to every connection task.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let caller = match stream.peer_cred() {
                    Ok(cred) => state.privilege.caller(
                        cred.pid().map_or(0, |p| p as u32),
                        cred.uid(),
                        cred.gid(),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer credentials; closing");
                        continue;
                    }
                };
                match state.connections.acquire(&caller) {
                    Ok(slot) => {
                        let state = state.clone();
                        let stop = stop_rx.clone();
                        tasks.spawn(async move {
                            serve_connection(stream, caller, state, stop).await;
                            drop(slot);
                        });
                    }
                    Err(refusal) => {
                        let message = match refusal {
                            SlotRefusal::PerUid(n) => {
                                format!("uid {} already holds {n} connections", caller.uid)
                            }
                            SlotRefusal::Total(n) => {
                                format!("all {n} connections open to this peer are taken")
                            }
                        };
                        tracing::debug!(uid = caller.uid, %message, "connection refused");
                        // Answered off the accept loop, with a deadline: a
                        // peer that does not read cannot stall accepting.
                        tasks.spawn(async move {
                            let (_, mut writer) = stream.into_split();
                            let answer = error(ErrorCode::ResourceExhausted, message);
                            let _ = tokio::time::timeout(
                                REFUSAL_WRITE_TIMEOUT,
                                send(&mut writer, &answer),
                            )
                            .await;
                        });
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections did not finish within 2 s of shutdown; aborting them");
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    /// The peer closed between frames.
    Closed,
    /// The daemon is stopping.
    Shutdown,
    /// The peer broke the protocol or the stream failed.
    Broken(String),
}

async fn serve_connection(
    stream: UnixStream,
    caller: Caller,
    state: Arc<DaemonState>,
    mut stop: watch::Receiver<bool>,
) {
    // Unprivileged connections that stay silent free their slot soon.
    let idle_timeout = Duration::from_millis(if caller.privileged {
        state.config.server.privileged_idle_timeout_ms
    } else {
        state.config.server.idle_timeout_ms
    });
    let (mut reader, mut writer) = stream.into_split();
    let max = state.config.server.max_frame_bytes;
    let ended = async {
        // Handshake, with a deadline.
        let hello_timeout = Duration::from_millis(state.config.server.handshake_timeout_ms);
        let first = match tokio::time::timeout(hello_timeout, read_request(&mut reader, max)).await
        {
            Err(_) => return Ended::Broken("no handshake within the timeout".into()),
            Ok(r) => r,
        };
        let first = match first {
            Ok(Some(req)) => req,
            Ok(None) => return Ended::Closed,
            Err(e) => return refuse(&mut writer, e).await,
        };
        match state.handshake(&caller, &first) {
            Ok(hello) => {
                if let Err(e) = send(&mut writer, &hello).await {
                    return Ended::Broken(e);
                }
            }
            Err(refusal) => {
                let _ = send(&mut writer, &refusal).await;
                return Ended::Broken("handshake refused".into());
            }
        }
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return Ended::Shutdown,
                r = tokio::time::timeout(idle_timeout, read_request(&mut reader, max)) => r,
            };
            let req = match next {
                Err(_) => return Ended::Broken("idle timeout".into()),
                Ok(Ok(Some(req))) => req,
                Ok(Ok(None)) => return Ended::Closed,
                Ok(Err(e)) => return refuse(&mut writer, e).await,
            };
            if let Request::Subscribe { interval_ns } = req {
                return stream_power(
                    &state,
                    &caller,
                    interval_ns,
                    &mut reader,
                    &mut writer,
                    &mut stop,
                )
                .await;
            }
            let resp = if matches!(
                req,
                Request::Breakdown { .. }
                    | Request::SubmitSpans(_)
                    | Request::SubmitSpansOnce { .. }
                    | Request::TrackCgroup { .. }
                    | Request::CgroupEnergy { .. }
            ) {
                // These can take milliseconds (regression over many spans,
                // a walk of the cgroup tree): keep them off the async
                // workers.
                let state = state.clone();
                match tokio::task::spawn_blocking(move || state.handle(&caller, req)).await {
                    Ok(resp) => resp,
                    Err(e) => error(ErrorCode::Internal, format!("request failed: {e}")),
                }
            } else {
                state.handle(&caller, req)
            };
            if let Err(e) = send(&mut writer, &resp).await {
                return Ended::Broken(e);
            }
        }
    }
    .await;
    match ended {
        Ended::Closed | Ended::Shutdown => {
            tracing::debug!(uid = caller.uid, pid = caller.pid, "connection closed")
        }
        Ended::Broken(why) => {
            tracing::info!(uid = caller.uid, pid = caller.pid, %why, "connection ended")
        }
    }
}

/// Answers a framing error (where the stream is still writable) and ends
/// the connection.
async fn refuse(writer: &mut OwnedWriteHalf, e: FrameError) -> Ended {
    let code = match &e {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FrameError::Malformed(_) => ErrorCode::MalformedFrame,
        FrameError::Truncated { .. } | FrameError::Io(_) => return Ended::Broken(e.to_string()),
    };
    let _ = send(writer, &error(code, e.to_string())).await;
    Ended::Broken(e.to_string())
}

/// Reads one request frame; `Ok(None)` on a clean close between frames.
async fn read_request(
    reader: &mut OwnedReadHalf,
    max: usize,
) -> Result<Option<Request>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut header[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(FrameError::Truncated {
                    got,
                    expected: HEADER_LEN,
                })
            }
            n => got += n,
        }
    }
    // The length is checked before any payload is allocated.
    let len = frame::payload_len(header, max)?;
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match reader.read(&mut payload[got..]).await? {
            0 => {
                return Err(FrameError::Truncated {
                    got: HEADER_LEN + got,
                    expected: HEADER_LEN + len,
                })
            }
            n => got += n,
        }
    }
    frame::decode_payload(&payload).map(Some)
}

async fn send(writer: &mut OwnedWriteHalf, resp: &Response) -> Result<(), String> {
    let bytes = frame::encode(resp).map_err(|e| e.to_string())?;
    writer.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// Sends power updates until the peer closes, sends anything, or the daemon stops.
async fn stream_power(
    state: &DaemonState,
    caller: &Caller,
    interval_ns: u64,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    if !caller.privileged && !state.rate.allow(caller.uid, MonotonicNs::now()) {
        let _ = send(
            writer,
            &error(ErrorCode::RateLimited, "rate limit exceeded"),
        )
        .await;
        return Ended::Broken("rate limited".into());
    }
    // A live stream wants full-rate samples for as long as it lasts.
    let _demand = state.engine.demand().hold();
    let coarse = Coarsening::for_caller(caller, &state.config.policy);
    let interval = Duration::from_nanos(
        interval_ns
            .max(coarse.window_ns)
            .max(MIN_STREAM_INTERVAL_NS),
    );
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            _ = stop.changed() => return Ended::Shutdown,
            r = reader.read(&mut probe) => {
                return match r {
                    Ok(0) => Ended::Closed,
                    _ => Ended::Broken("peer sent data during a subscription".into()),
                };
            }
            _ = ticker.tick() => {
                let snapshot = state.power_snapshot(caller, MonotonicNs::now());
                if let Err(e) = send(writer, &Response::PowerUpdate(snapshot)).await {
                    return Ended::Broken(e);
                }
            }
        }
    }
}
