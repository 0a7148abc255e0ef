//! The installed unit's system-call filter lets through every call the
//! daemon needs (issue 12, item 9: `~@debug` silently removed
//! `perf_event_open`, which the first line allowed, so the perf RAPL path
//! and the task-clock tracker got EPERM under the unit).
//!
//! systemd's rule, evaluated here line by line: the first
//! `SystemCallFilter=` without `~` starts an allow list; a later `~` line
//! removes its calls; a later plain line adds its calls back. Groups are
//! expanded by `systemd-analyze syscall-filter` (the same table systemd
//! uses), recursively.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

/// Calls energyd makes that a filter could take away: perf counters, pidfds
/// for exit detection, absolute sleeps, real-time priority for samplers,
/// the socket server, and the descriptor limit check.
const NEEDED: &[&str] = &[
    "perf_event_open",
    "pidfd_open",
    "clock_nanosleep",
    "sched_setscheduler",
    "accept4",
    "poll",
    "epoll_wait",
    "pread64",
    "getrlimit",
];

/// Calls the unit must keep denied (debugging others, privileged work).
const DENIED: &[&str] = &["ptrace", "process_vm_readv", "mount", "reboot", "setuid"];

fn expand(item: &str, cache: &mut HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    if !item.starts_with('@') {
        return BTreeSet::from([item.to_owned()]);
    }
    if let Some(s) = cache.get(item) {
        return s.clone();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", item])
        .output()
        .expect("systemd-analyze is needed to expand the unit's system-call groups");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {item} failed"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut set = BTreeSet::new();
    for line in text.lines().skip(1) {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        set.extend(expand(entry, cache));
    }
    cache.insert(item.to_owned(), set.clone());
    set
}

/// The calls a unit's filter lines allow, by systemd's rule.
fn allowed(unit: &str) -> BTreeSet<String> {
    let mut cache = HashMap::new();
    let mut allow: Option<BTreeSet<String>> = None;
    for line in unit.lines() {
        let Some(value) = line.trim().strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let calls: BTreeSet<String> = list
            .split_whitespace()
            .flat_map(|i| expand(i, &mut cache))
            .collect();
        let set = allow.get_or_insert_with(BTreeSet::new);
        assert!(
            !(deny && set.is_empty()),
            "this checker models allow-list units only"
        );
        if deny {
            set.retain(|c| !calls.contains(c));
        } else {
            set.extend(calls);
        }
    }
    allow.expect("the unit has a SystemCallFilter")
}

#[test]
fn unit_filter_allows_perf_and_every_call_energyd_needs() {
    let unit = include_str!("../../systemd/energyd.service");
    let allow = allowed(unit);
    let missing: Vec<&&str> = NEEDED.iter().filter(|c| !allow.contains(**c)).collect();
    assert!(missing.is_empty(), "the unit denies {missing:?}");
    let leaked: Vec<&&str> = DENIED.iter().filter(|c| allow.contains(**c)).collect();
    assert!(leaked.is_empty(), "the unit allows {leaked:?}");
}

#[test]
fn unit_raises_the_descriptor_limit() {
    let unit = include_str!("../../systemd/energyd.service");
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE")
        .trim()
        .parse()
        .expect("a number");
    assert!(limit >= 16_384, "LimitNOFILE={limit}");
}
