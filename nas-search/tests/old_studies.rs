//! Studies written before the metric registry (schema 1) still open,
//! report and resume. The fixture `data/study-schema-1.sqlite` was written
//! by the schema-1 code (`nas-search-table` of main at 82880e9, the commit
//! this branch starts from) from `data/study-schema-1.table.csv`:
//!
//! ```text
//! nas-search-table run --table study-schema-1.table.csv \
//!   --objectives val_accuracy:max,predicted_inference_energy_j_per_1k:min \
//!   --metrics predicted_inference_energy_sigma_j_per_1k,predicted_training_energy_j,inference_energy_j_per_1k,params \
//!   --study study-schema-1.sqlite --budget 6 --strategy random --seed 5
//! ```
//!
//! Six finished trials with predicted figures, three of them with a
//! measured inference energy 1.1 times the prediction.

use nas_search::metric::{MetricInfo, MetricRegistry};
use nas_search::objective::Direction::{Maximize, Minimize};
use nas_search::report::{summarize, write_report_for};
use nas_search::study::{Study, StudyError, SCHEMA_VERSION};
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/study-schema-1.sqlite"
);

/// A private copy of the fixture (opening a study may write to it).
fn copy(dir: &Path) -> PathBuf {
    let to = dir.join("old.sqlite");
    std::fs::copy(FIXTURE, &to).unwrap();
    to
}

fn schema_version(file: &Path) -> String {
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.query_row(
        "SELECT value FROM study_meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// What a client resuming the old study declares.
fn registry() -> MetricRegistry {
    let e = "inference_energy_j_per_1k";
    MetricRegistry::new([
        MetricInfo::measured("val_accuracy", "fraction", Maximize),
        MetricInfo::measured(e, "J per 1000 rows", Minimize),
        MetricInfo::measured("training_energy_j", "J", Minimize),
        MetricInfo::measured("params", "parameters", Minimize),
        MetricInfo::predicted(
            "predicted_inference_energy_j_per_1k",
            "J per 1000 rows",
            Minimize,
            e,
        ),
        MetricInfo::predicted(
            "predicted_inference_energy_sigma_j_per_1k",
            "J per 1000 rows",
            Minimize,
            e,
        )
        .uncertainty_of("predicted_inference_energy_j_per_1k"),
        MetricInfo::predicted(
            "predicted_training_energy_j",
            "J",
            Minimize,
            "training_energy_j",
        ),
    ])
    .unwrap()
}

#[test]
fn an_old_study_opens_and_reports_its_metrics_as_undeclared() {
    let dir = tempfile::tempdir().unwrap();
    let file = copy(dir.path());
    assert_eq!(schema_version(&file), "1");
    let mut study = Study::open_existing(&file).unwrap();
    let trials = study.trials().unwrap();
    assert_eq!(trials.len(), 6);
    let spec = study.spec().clone();
    assert!(spec.metrics.is_empty());
    let summary = summarize(&spec, &trials);
    assert_eq!(summary.finished_trials, 6);
    // Nothing is guessed from names: no pairs, every metric undeclared.
    assert!(summary.predicted_vs_measured.is_empty());
    assert_eq!(
        summary.undeclared_metrics,
        [
            "inference_energy_j_per_1k",
            "params",
            "predicted_inference_energy_j_per_1k",
            "predicted_inference_energy_sigma_j_per_1k",
            "predicted_training_energy_j",
            "val_accuracy",
        ]
    );
    let out = dir.path().join("report");
    let (_, files) = write_report_for(&spec, &trials, &file, &out).unwrap();
    assert!(!files.files.is_empty());
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("declares no metrics"), "{md}");
    // Reading does not change the file's layout.
    assert_eq!(schema_version(&file), "1");
}

#[test]
fn an_old_study_with_the_client_registry_pairs_predictions_by_declaration() {
    let dir = tempfile::tempdir().unwrap();
    let file = copy(dir.path());
    let mut study = Study::open_existing(&file).unwrap();
    let trials = study.trials().unwrap();
    let mut spec = study.spec().clone();
    // What nas-client does for a study that declares nothing.
    spec.metrics = registry();
    let summary = summarize(&spec, &trials);
    assert!(summary.undeclared_metrics.is_empty());
    let pairs = &summary.predicted_vs_measured;
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    for p in pairs {
        assert_eq!(p.metric, "inference_energy_j_per_1k");
        assert_eq!(p.predicted_metric, "predicted_inference_energy_j_per_1k");
        assert!((p.measured / p.predicted - 1.1).abs() < 1e-9);
    }
}

#[test]
fn resuming_an_old_study_stores_the_registry_and_upgrades_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let file = copy(dir.path());
    let old = Study::open_existing(&file).unwrap().spec().clone();
    let mut spec = old.clone();
    spec.metrics = registry();
    // Not resuming a study that holds trials is refused, as before.
    assert!(matches!(
        Study::open(&file, spec.clone(), false),
        Err(StudyError::Exists { .. })
    ));
    let study = Study::open(&file, spec.clone(), true).unwrap();
    assert_eq!(study.spec().metrics, registry());
    drop(study);
    assert_eq!(schema_version(&file), SCHEMA_VERSION.to_string());
    let mut reopened = Study::open_existing(&file).unwrap();
    assert_eq!(reopened.spec().metrics, registry());
    let trials = reopened.trials().unwrap();
    let summary = summarize(reopened.spec(), &trials);
    assert_eq!(summary.predicted_vs_measured.len(), 3);

    // A client declaring more metrics later: the union is kept.
    let mut more = spec.clone();
    more.metrics =
        MetricRegistry::new([MetricInfo::measured("latency_ms", "ms", Minimize)]).unwrap();
    let study = Study::open(&file, more, true).unwrap();
    assert!(study.spec().metrics.get("latency_ms").is_some());
    assert!(study
        .spec()
        .metrics
        .prediction_of("inference_energy_j_per_1k")
        .is_some());
    drop(study);

    // A client contradicting a stored declaration is refused, naming it.
    let mut clash = spec;
    clash.metrics =
        MetricRegistry::new([MetricInfo::measured("val_accuracy", "percent", Maximize)]).unwrap();
    let e = Study::open(&file, clash, true).err().expect("refused");
    assert!(matches!(e, StudyError::Metrics { .. }), "{e}");
    assert!(e.to_string().contains("val_accuracy"), "{e}");
}

#[test]
fn a_study_of_a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = copy(dir.path());
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute(
        "UPDATE study_meta SET value = ?1 WHERE key = 'schema_version'",
        [(SCHEMA_VERSION + 1).to_string()],
    )
    .unwrap();
    drop(conn);
    let e = Study::open_existing(&file).err().expect("refused");
    assert!(matches!(e, StudyError::NewerSchema { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("old.sqlite") && text.contains("schema version"),
        "{text}"
    );
}
