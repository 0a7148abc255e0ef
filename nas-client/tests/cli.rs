//! The `nas-client` binary end to end: bad input gives a clear error and
//! exit status 1; a raw CSV trains and prints JSON.

use std::path::Path;
use std::process::{Command, Output};

fn nas_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nas-client"))
        .args(args)
        .output()
        .expect("nas-client runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writes");
    path.display().to_string()
}

#[test]
fn bad_files_fail_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ragged = write(dir.path(), "ragged.csv", "a,b,y\n1,2,0\n3,4\n");
    let out = nas_client(&["train", "--data", &ragged, "--target", "y", "--no-energy"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ragged.csv") && err.contains("line 3"),
        "{err}"
    );

    let mut text = String::from("a,y\n");
    for i in 0..50 {
        text.push_str(&format!(
            "{},{}\n",
            if i == 20 {
                "oops".to_string()
            } else {
                i.to_string()
            },
            i % 2
        ));
    }
    let bad = write(dir.path(), "bad.csv", &text);
    let out = nas_client(&["train", "--data", &bad, "--target", "y", "--no-energy"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.csv")
            && err.contains("line 22")
            && err.contains("column 1")
            && err.contains("oops"),
        "{err}"
    );

    let out = nas_client(&["train", "--data", &bad, "--target", "salary", "--no-energy"]);
    let err = stderr(&out);
    assert!(err.contains("no column named \"salary\""), "{err}");

    let empty = write(dir.path(), "empty.csv", "");
    let err = stderr(&nas_client(&[
        "train",
        "--data",
        &empty,
        "--target",
        "y",
        "--no-energy",
    ]));
    assert!(err.contains("empty.csv") && err.contains("empty"), "{err}");

    let out = nas_client(&["train", "--dataset", "nope", "--no-energy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("adult"), "lists the bundled datasets");
}

#[test]
fn raw_csv_trains_and_prints_json() {
    let raw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/adult.data.gz");
    let out = nas_client(&[
        "train",
        "--data",
        raw.to_str().expect("utf-8 path"),
        "--target",
        "Salary",
        "--arch",
        "32",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--inference-ms",
        "0",
        "--no-energy",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let acc = report["test"]["accuracy"].as_f64().expect("accuracy");
    assert!(acc > 0.80, "test accuracy {acc}");
    assert_eq!(report["task"], "binary");
    assert!(report["energy"].is_null());
    assert!(report["energy_unavailable"]
        .as_str()
        .expect("reason")
        .contains("--no-energy"));
    assert!(report["train_kernels"].as_array().expect("kernels").len() >= 8);
}

#[test]
fn an_unknown_dataset_stops_a_search_before_any_trial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let study = dir.path().join("s.db");
    for command in ["search", "compare"] {
        let mut args = vec![command, "--dataset", "no_such_dataset", "--budget", "3"];
        let study_arg = study.display().to_string();
        if command == "search" {
            args.extend(["--study", &study_arg]);
        } else {
            args.extend(["--dir", &study_arg]);
        }
        let out = nas_client(&args);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = stderr(&out);
        assert!(
            err.contains("no_such_dataset") && err.contains("phoneme"),
            "{command}: {err}"
        );
        assert!(!err.contains("trial failed"), "{command}: {err}");
    }
    assert!(!study.exists(), "no study was created");
}

/// `nas-client report … | head`: the reader goes away, and the report ends
/// quietly (killed by SIGPIPE, as any Unix filter) instead of panicking in
/// `println!`. The pipe's read end is closed before the child starts, so
/// its first write always finds no reader.
#[test]
fn report_into_a_closed_pipe_ends_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("study.sqlite");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../nas-search/tests/data/study-schema-1.sqlite"
        ),
        &db,
    )
    .unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) succeeded, so both are open descriptors owned by us.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let out = Command::new(env!("CARGO_BIN_EXE_nas-client"))
        .args(["report", "--json", "--study", db.to_str().unwrap()])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .expect("nas-client runs");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

/// A small table of "trained" MLPs on phoneme: accuracy rises with width,
/// so a proxy has something to rank.
fn proxy_table(dir: &Path) -> String {
    let mut text = String::from("n_layers,width_1,width_2,activation,val_accuracy\n");
    let mut i = 0;
    for w1 in [4, 8, 16, 32] {
        for w2 in [4, 16, 64] {
            for act in ["relu", "tanh"] {
                i += 1;
                let acc = 0.6 + 0.001 * (w1 * w2) as f64 / 10.0 + 0.0001 * i as f64;
                text.push_str(&format!("2,{w1},{w2},{act},{acc}\n"));
            }
        }
    }
    write(dir, "table.csv", &text)
}

#[test]
fn an_evolution_resumes_from_its_checkpoint_and_its_expression_is_a_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = proxy_table(dir.path());
    let checkpoint = dir.path().join("evolve.txt").display().to_string();
    let out_expr = dir.path().join("mine.expr").display().to_string();
    let evolve = |generations: &str| {
        nas_client(&[
            "proxies",
            "--table",
            &table,
            "--dataset",
            "phoneme",
            "--proxy",
            "params",
            "--sample-size",
            "10",
            "--repeats",
            "2",
            "--bins",
            "2",
            "--evolve-table",
            &table,
            "--evolve-dataset",
            "phoneme",
            "--evolve-sample",
            "12",
            "--evolve-validation-sample",
            "8",
            "--evolve-population",
            "6",
            "--evolve-generations",
            generations,
            "--evolve-checkpoint",
            &checkpoint,
            "--evolve-out",
            &out_expr,
            "--json",
        ])
    };
    let first = evolve("2");
    assert!(first.status.success(), "{}", stderr(&first));
    let progress = stderr(&first);
    assert!(progress.contains("evolution generation 2/2"), "{progress}");
    let saved = std::fs::read_to_string(&checkpoint).expect("checkpoint written");
    assert!(saved.contains("generation 2"), "{saved}");
    // Asked for more generations, it goes on from generation 2.
    let second = evolve("3");
    assert!(second.status.success(), "{}", stderr(&second));
    let progress = stderr(&second);
    assert!(
        progress.contains("resumed") && progress.contains("at generation 2"),
        "{progress}"
    );
    assert!(progress.contains("evolution generation 3/3"), "{progress}");
    assert!(!progress.contains("evolution generation 1/3"), "{progress}");
    let summary: serde_json::Value = serde_json::from_slice(&second.stdout).expect("JSON summary");
    let expression = summary["evolved"]["expression"]
        .as_str()
        .expect("expression");
    assert!(summary["evolved"]["validation_sample_tau"].is_number());
    // The saved expression scores like any proxy, under its file name.
    let scored = nas_client(&[
        "proxies",
        "--table",
        &table,
        "--dataset",
        "phoneme",
        "--proxy",
        &out_expr,
        "--proxy",
        "evolved_phoneme",
        "--sample-size",
        "10",
        "--repeats",
        "2",
        "--bins",
        "2",
        "--json",
    ]);
    assert!(scored.status.success(), "{}", stderr(&scored));
    let summary: serde_json::Value = serde_json::from_slice(&scored.stdout).expect("JSON");
    let names: Vec<&str> = summary["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .map(|p| p["proxy"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["mine", "evolved_phoneme"]);
    let text = std::fs::read_to_string(&out_expr).expect("expression file");
    assert!(text.lines().any(|l| l == expression), "{text}");
    // A checkpoint of other settings is refused, naming the file.
    let other = nas_client(&[
        "proxies",
        "--table",
        &table,
        "--dataset",
        "phoneme",
        "--proxy",
        "params",
        "--evolve-table",
        &table,
        "--evolve-dataset",
        "phoneme",
        "--evolve-population",
        "7",
        "--evolve-generations",
        "3",
        "--evolve-checkpoint",
        &checkpoint,
    ]);
    assert_eq!(other.status.code(), Some(1));
    let err = stderr(&other);
    assert!(
        err.contains("evolve.txt") && err.contains("population=6"),
        "{err}"
    );
    // An unknown proxy name is a clear error listing what exists.
    let bad = nas_client(&[
        "proxies",
        "--table",
        &table,
        "--dataset",
        "phoneme",
        "--proxy",
        "zenn",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("evolved_phoneme"), "{}", stderr(&bad));
}

#[test]
fn a_combined_evolution_is_judged_as_its_saved_file_scores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = proxy_table(dir.path());
    let checkpoint = dir.path().join("combined.txt").display().to_string();
    let out_expr = dir.path().join("combo.expr").display().to_string();
    let common = [
        "proxies",
        "--table",
        &table,
        "--dataset",
        "phoneme",
        "--proxy",
        "params",
        "--sample-size",
        "10",
        "--repeats",
        "2",
        "--bins",
        "2",
        "--json",
    ];
    let evolve = |terminals: &str| {
        let mut args = common.to_vec();
        args.extend([
            "--evolve-table",
            &table,
            "--evolve-dataset",
            "phoneme",
            "--evolve-sample",
            "12",
            "--evolve-validation-sample",
            "8",
            "--evolve-population",
            "6",
            "--evolve-generations",
            "2",
            "--evolve-terminals",
            terminals,
            "--evolve-checkpoint",
            &checkpoint,
            "--evolve-out",
            &out_expr,
        ]);
        nas_client(&args)
    };
    let run = evolve("proxies+tensors");
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON summary");
    assert_eq!(summary["evolved"]["terminals"], "proxies+tensors");
    let rows = summary["proxies"].as_array().expect("proxies");
    assert_eq!(rows[1]["proxy"], "evolved_combined");
    let text = std::fs::read_to_string(&out_expr).expect("expression file");
    let expression = summary["evolved"]["expression"].as_str().expect("text");
    assert!(text.lines().any(|l| l == expression), "{text}");
    assert!(text.contains("terminals proxies+tensors"), "{text}");
    // The saved file, used as --proxy, scores every architecture as the
    // judged row did: the same τ over all of them.
    let mut args = common.to_vec();
    args[6] = &out_expr;
    let scored = nas_client(&args);
    assert!(scored.status.success(), "{}", stderr(&scored));
    let again: serde_json::Value = serde_json::from_slice(&scored.stdout).expect("JSON");
    assert_eq!(again["proxies"][0]["proxy"], "combo");
    assert_eq!(again["proxies"][0]["tau_all"], rows[1]["tau_all"]);
    // Its checkpoint is refused by a run of the tensor level.
    let other = evolve("tensors");
    assert_eq!(other.status.code(), Some(1));
    let err = stderr(&other);
    assert!(
        err.contains("combined.txt") && err.contains("terminals=proxies+tensors"),
        "{err}"
    );
}
