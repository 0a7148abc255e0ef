//! Arbitrary bytes and arbitrary requests through the frame decoder and
//! the request handler: no panic, and no answer that leaks another uid's
//! process to an unprivileged caller.

use energyd::config::Config;
use energyd::daemon::build_state;
use energyd::policy::Caller;
use energyd::service::DaemonState;
use proptest::prelude::*;
use shared::frame::{self, MAX_FRAME_LEN};
use shared::protocol::{CgroupSelector, ErrorCode, Request, Response, SpanBatch, SpanRecord};
use shared::MonotonicNs;
use std::sync::{Arc, OnceLock};

fn state() -> Arc<DaemonState> {
    static STATE: OnceLock<Arc<DaemonState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let config = Config::parse(
                r#"
                [policy]
                requests_per_sec = 1e12
                burst = 1e12
                [sources]
                powercap_root = "/nonexistent"
                msr_root = "/nonexistent"
                nvml = false
                [sources.simulated]
                curve = { shape = "constant", watts = 10.0 }
                "#,
            )
            .expect("config");
            build_state(config, true).expect("state")
        })
        .clone()
}

const ROOT: Caller = Caller {
    pid: 1,
    uid: 0,
    gid: 0,
    privileged: true,
};
const USER: Caller = Caller {
    pid: 2,
    uid: 4242,
    gid: 4242,
    privileged: false,
};

fn any_time() -> impl Strategy<Value = MonotonicNs> {
    // Arbitrary u64s lie almost all after the daemon's clock (spans there
    // are refused); times up to now reach attribution with hostile values.
    let now = MonotonicNs::now().0;
    prop_oneof![
        Just(MonotonicNs(0)),
        Just(MonotonicNs(u64::MAX)),
        any::<u64>().prop_map(MonotonicNs),
        (0..=now).prop_map(MonotonicNs),
        (now.saturating_sub(5_000_000_000)..=now).prop_map(MonotonicNs),
    ]
}

fn any_request() -> impl Strategy<Value = Request> {
    let pid = prop_oneof![
        Just(0u32),
        Just(1u32),
        Just(std::process::id()),
        Just(u32::MAX),
        any::<u32>()
    ];
    let span = (0u32..4, any_time(), any_time(), pid.clone(), any::<u32>()).prop_map(
        |(name, start, end, pid, tid)| SpanRecord {
            name,
            start,
            end,
            pid,
            tid,
        },
    );
    let batch = (
        proptest::collection::vec("[a-z_]{0,12}", 0..3),
        proptest::collection::vec(span, 0..8),
    )
        .prop_map(|(names, spans)| SpanBatch { names, spans })
        .boxed();
    prop_oneof![
        (any::<u32>(), ".{0,8}").prop_map(|(v, n)| Request::Hello {
            protocol_version: v,
            client_name: n
        }),
        Just(Request::Status),
        Just(Request::ListSources),
        Just(Request::CurrentPower),
        (any_time(), any_time()).prop_map(|(from, to)| Request::Energy { from, to }),
        (pid.clone(), any::<bool>()).prop_map(|(pid, c)| Request::RegisterProcess {
            pid,
            include_children: c
        }),
        pid.clone()
            .prop_map(|pid| Request::UnregisterProcess { pid }),
        batch.clone().prop_map(Request::SubmitSpans),
        (any::<u64>(), batch)
            .prop_map(|(batch_id, batch)| Request::SubmitSpansOnce { batch_id, batch }),
        (
            pid,
            proptest::option::of(any_time()),
            proptest::option::of(any_time())
        )
            .prop_map(|(pid, from, to)| Request::Breakdown { pid, from, to }),
        any::<u64>().prop_map(|interval_ns| Request::Subscribe { interval_ns }),
        cgroup_request(),
    ]
}

/// Cgroup requests with names and paths good, bad and hostile.
fn cgroup_request() -> impl Strategy<Value = Request> {
    let cgroup = prop_oneof![
        "[a-z@.\\-]{0,12}(\\.service|\\.slice|\\.scope|)"
            .prop_map(|name| CgroupSelector::Unit { name }),
        prop_oneof![
            Just("/".to_owned()),
            Just("/../../etc".to_owned()),
            Just("/nonexistent.slice/x.service".to_owned()),
            "[/a-z.]{0,16}",
        ]
        .prop_map(|path| CgroupSelector::Path { path }),
    ];
    prop_oneof![
        cgroup
            .clone()
            .prop_map(|cgroup| Request::TrackCgroup { cgroup }),
        cgroup
            .clone()
            .prop_map(|cgroup| Request::UntrackCgroup { cgroup }),
        (
            cgroup,
            proptest::option::of(any_time()),
            proptest::option::of(any_time())
        )
            .prop_map(|(cgroup, from, to)| Request::CgroupEnergy { cgroup, from, to }),
    ]
}

/// A fuzz input: arbitrary bytes, or a mutated encoding of a valid request.
fn fuzz_input() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        any_request(),
        0u8..4,
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..3),
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 1..4),
    )
        .prop_map(|(req, kind, flips, cut, junk)| {
            let frame = frame::encode(&req).expect("encode");
            let mut payload = frame[shared::frame::HEADER_LEN..].to_vec();
            match kind {
                // Byte substitutions.
                0 => {
                    for (at, val) in flips {
                        let i = at % payload.len().max(1);
                        if let Some(b) = payload.get_mut(i) {
                            *b = val;
                        }
                    }
                }
                // Truncation.
                1 => payload.truncate(cut % (payload.len() + 1)),
                // Trailing junk.
                2 => payload.extend(junk),
                // Unchanged: hostile values in a well-formed request.
                _ => {}
            }
            payload
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..64), mutated]
}

/// 100k inputs through the frame decoder: half arbitrary byte strings,
/// half valid encoded requests with random byte mutations, truncations and
/// appended junk (which decode far more often, so the handler sees them).
/// Whatever decodes goes through the handshake and the handler as an
/// unprivileged and a privileged caller. Nothing panics.
#[test]
fn arbitrary_frames_never_panic() {
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    const CASES: u32 = 100_000;
    let state = state();
    let cases = AtomicUsize::new(0);
    let decoded = AtomicUsize::new(0);
    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner
        .run(&fuzz_input(), |bytes| {
            cases.fetch_add(1, Ordering::Relaxed);
            let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            for buf in [&bytes[..], &framed[..]] {
                if let Ok(Some((req, _))) = frame::decode::<Request>(buf, MAX_FRAME_LEN) {
                    decoded.fetch_add(1, Ordering::Relaxed);
                    let _ = state.handshake(&USER, &req);
                    let _ = state.handle(&USER, req.clone());
                    let _ = state.handle(&ROOT, req);
                }
            }
            Ok(())
        })
        .expect("no input panics or fails");
    assert_eq!(
        cases.load(Ordering::Relaxed),
        CASES as usize,
        "every case ran"
    );
    // Random bytes must also reach the handler, not only the decoder.
    assert!(
        decoded.load(Ordering::Relaxed) > 10_000,
        "only {} inputs decoded",
        decoded.load(Ordering::Relaxed)
    );
}

/// The case CI's fuzzing found (a breakdown over spans that cover the
/// whole clock overflowed a sum): a privileged caller tracks a process,
/// reports spans at the ends of the clock, and asks for a breakdown up to
/// the end of time. The spans are refused and the breakdown answered.
#[test]
fn spans_at_the_ends_of_the_clock_are_refused_and_breakdowns_answered() {
    let state = state();
    // A process of its own: the other tests track this one.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    assert!(matches!(
        state.handle(
            &ROOT,
            Request::RegisterProcess {
                pid,
                include_children: false,
            },
        ),
        Response::Registered { tracked: true, .. }
    ));
    let mut batch = SpanBatch::default();
    for _ in 0..4 {
        batch.push("whole_clock", MonotonicNs(0), MonotonicNs(u64::MAX), pid, 1);
    }
    batch.push("ok", MonotonicNs(0), MonotonicNs(1), pid, 1);
    match state.handle(&ROOT, Request::SubmitSpans(batch)) {
        Response::SpansAccepted { accepted, rejected } => assert_eq!((accepted, rejected), (1, 4)),
        other => panic!("unexpected answer {other:?}"),
    }
    for (from, to) in [
        (None, Some(MonotonicNs(u64::MAX))),
        (Some(MonotonicNs(0)), None),
    ] {
        match state.handle(&ROOT, Request::Breakdown { pid, from, to }) {
            Response::Breakdown(b) => {
                assert_eq!(b.pid, pid);
                assert!(b.to <= MonotonicNs::now(), "the interval ends by now");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Structured hostile requests: no panic; an unprivileged caller never
    /// gets a breakdown of a process it does not own.
    #[test]
    fn arbitrary_requests_never_panic_or_leak(req in any_request()) {
        let state = state();
        let as_user = state.handle(&USER, req.clone());
        if let (Request::Breakdown { .. }, Response::Breakdown(_)) = (&req, &as_user) {
            prop_assert!(false, "uid 4242 owns no process, yet got a breakdown");
        }
        if let (Request::RegisterProcess { .. }, Response::Registered { .. }) = (&req, &as_user) {
            prop_assert!(false, "uid 4242 owns no process, yet registered one");
        }
        let _ = state.handle(&ROOT, req.clone());
        let _ = state.handshake(&ROOT, &req);
        // Every answer still encodes into a valid frame.
        prop_assert!(frame::encode(&as_user).is_ok());
    }
}

#[test]
fn unprivileged_breakdown_of_foreign_process_is_denied() {
    let state = state();
    let me = std::process::id();
    assert!(matches!(
        state.handle(
            &ROOT,
            Request::RegisterProcess {
                pid: me,
                include_children: false
            }
        ),
        Response::Registered { tracked: true, .. }
    ));
    match state.handle(
        &USER,
        Request::Breakdown {
            pid: me,
            from: None,
            to: None,
        },
    ) {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::PermissionDenied),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(matches!(
        state.handle(
            &ROOT,
            Request::Breakdown {
                pid: me,
                from: None,
                to: None
            }
        ),
        Response::Breakdown(_)
    ));
}
