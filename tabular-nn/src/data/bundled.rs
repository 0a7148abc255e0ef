//! Datasets shipped with the project (`data/` at the repository root),
//! compiled into the binary so `nas-client train --dataset adult` works on a
//! fresh machine with no download and from any directory.
//!
//! The PMLB files code categories as integers; which columns are
//! categorical comes from each dataset's PMLB metadata file (also bundled),
//! so they are one-hot encoded rather than read as magnitudes.

use super::{read_table_bytes, ColumnKind, DataError, Dataset, LoadOptions};

/// A bundled dataset.
#[derive(Debug, Clone, Copy)]
pub struct BundledDataset {
    /// Name used on the command line.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// File name under `data/`.
    pub file: &'static str,
    /// Target column.
    pub target: &'static str,
    bytes: &'static [u8],
    metadata: Option<&'static str>,
}

macro_rules! bundled {
    ($name:literal, $file:literal, $target:literal, $meta:expr, $desc:literal) => {
        BundledDataset {
            name: $name,
            description: $desc,
            file: $file,
            target: $target,
            bytes: include_bytes!(concat!("../../../data/", $file)),
            metadata: $meta,
        }
    };
}

/// Every bundled dataset.
pub const BUNDLED: &[BundledDataset] = &[
    bundled!(
        "adult",
        "adult.tsv.gz",
        "target",
        Some(include_str!("../../../data/adult.metadata.yaml")),
        "census income > $50K, binary, 48,842 rows x 14 (PMLB; UCI, CC BY 4.0)"
    ),
    bundled!(
        "adult_raw",
        "adult.data.gz",
        "Salary",
        None,
        "the raw UCI adult training file: string categories, '?' missing, binary, 32,561 rows"
    ),
    bundled!(
        "credit_g",
        "credit_g.tsv.gz",
        "target",
        Some(include_str!("../../../data/credit_g.metadata.yaml")),
        "German credit risk, binary, 1,000 rows x 20 (PMLB; UCI)"
    ),
    bundled!(
        "phoneme",
        "phoneme.tsv.gz",
        "target",
        Some(include_str!("../../../data/phoneme.metadata.yaml")),
        "nasal vs oral phonemes, binary, 5,404 rows x 5 (PMLB; OpenML)"
    ),
    bundled!(
        "magic",
        "magic.tsv.gz",
        "target",
        Some(include_str!("../../../data/magic.metadata.yaml")),
        "MAGIC gamma telescope, binary, 19,020 rows x 10 (PMLB; UCI)"
    ),
    bundled!(
        "spambase",
        "spambase.tsv.gz",
        "target",
        Some(include_str!("../../../data/spambase.metadata.yaml")),
        "spam e-mail, binary, 4,601 rows x 57 word and character frequencies (PMLB; UCI, CC BY 4.0)"
    ),
    bundled!(
        "letter",
        "letter.tsv.gz",
        "target",
        Some(include_str!("../../../data/letter.metadata.yaml")),
        "letter recognition, 26 classes, 20,000 rows x 16 (PMLB; UCI, CC BY 4.0)"
    ),
    bundled!(
        "california_housing",
        "california_housing.csv.gz",
        "median_house_value",
        None,
        "California housing prices, regression, 20,640 rows x 9, 207 missing cells (Pace and Barry 1997)"
    ),
];

/// Names of the bundled datasets.
pub fn names() -> Vec<&'static str> {
    BUNDLED.iter().map(|d| d.name).collect()
}

/// The bundled dataset called `name`.
pub fn find(name: &str) -> Result<&'static BundledDataset, DataError> {
    BUNDLED
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_owned(),
            available: names().join(", "),
        })
}

impl BundledDataset {
    /// Load options for this dataset: its target, and its categorical
    /// columns from the metadata file.
    pub fn options(&self) -> LoadOptions {
        let mut opts = LoadOptions::new(self.target);
        if let Some(meta) = self.metadata {
            for col in categorical_columns(meta) {
                opts.column_kinds.insert(col, ColumnKind::Categorical);
            }
        }
        opts
    }

    /// Loads it with `opts` (start from [`BundledDataset::options`]).
    pub fn load_with(&self, opts: &LoadOptions) -> Result<Dataset, DataError> {
        let source = format!("data/{} (bundled)", self.file);
        let table = read_table_bytes(&source, self.bytes)?;
        Dataset::from_table(self.name, &table, opts)
    }

    /// Loads it with its default options and the given split seed.
    pub fn load(&self, seed: u64) -> Result<Dataset, DataError> {
        let mut opts = self.options();
        opts.seed = seed;
        self.load_with(&opts)
    }
}

/// Loads the bundled dataset `name` with split seed `seed`.
pub fn load(name: &str, seed: u64) -> Result<Dataset, DataError> {
    find(name)?.load(seed)
}

/// Columns a PMLB metadata file marks `categorical` or `ordinal` (ordinal
/// codes there are alphabetical, not ordered, so they are categories too).
/// The format is a fixed layout of `  - name: X` / `    type: T` pairs; a
/// full YAML parser is not needed for it.
fn categorical_columns(meta: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_features = false;
    let mut current: Option<&str> = None;
    for line in meta.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') {
            in_features = line.trim_start().starts_with("features:");
            current = None;
            continue;
        }
        if !in_features {
            continue;
        }
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- name:") {
            current = Some(name.trim());
        } else if let (Some(kind), Some(name)) = (t.strip_prefix("type:"), current) {
            if matches!(kind.trim(), "categorical" | "ordinal") {
                out.push(name.to_owned());
            }
            current = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Task;

    #[test]
    fn metadata_marks_adult_categories() {
        let cats = categorical_columns(include_str!("../../../data/adult.metadata.yaml"));
        for c in ["workclass", "education", "marital-status", "native-country"] {
            assert!(cats.iter().any(|x| x == c), "{c} missing from {cats:?}");
        }
        assert!(!cats.iter().any(|x| x == "age" || x == "target"));
    }

    #[test]
    fn every_bundled_dataset_loads() {
        for d in BUNDLED {
            let ds = d.load(0).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert!(ds.train.rows() > ds.test.rows(), "{}", d.name);
            let (task, classes) = match d.name {
                "california_housing" => (Task::Regression, 0),
                "letter" => (Task::Multiclass, 26),
                _ => (Task::Binary, 2),
            };
            assert_eq!((ds.task, ds.classes.len()), (task, classes), "{}", d.name);
        }
        let adult = load("adult", 0).expect("adult");
        assert!(adult
            .feature_names
            .iter()
            .any(|f| f.starts_with("workclass=")));
        assert!(matches!(
            load("nope", 0),
            Err(DataError::UnknownDataset { .. })
        ));
    }
}
