//! Proxies by name: the standard ones ([`ProxyKind`]) and evolved
//! expressions saved as files, so an evolved proxy is used like a built-in
//! one. Evolved proxies bundled with the crate (in `proxies/evolved/`,
//! compiled in) have names; any other saved expression is read from its
//! file and named after it.
//!
//! A saved expression file is readable text: `#` comment lines (where and
//! how it was evolved), then the expression on one line: a per-layer
//! expression (see [`crate::evolve::Expression`]'s text form) or an
//! architecture-level one over proxies and per-layer expressions
//! ([`crate::scalar::ScalarExpr`]).

use crate::evolve::{layer_tensors, Expression, ExpressionParseError};
use crate::scalar::{scalar_inputs, ScalarExpr, Terminal};
use crate::{ProxyData, ProxyError, ProxyKind};
use nn_plan::ModelSpec;
use std::fmt;
use std::path::Path;

/// Evolved proxies compiled into the crate: (name, file text).
pub const BUNDLED_EVOLVED: &[(&str, &str)] = &[
    (
        "evolved_phoneme",
        include_str!("../evolved/evolved_phoneme.expr"),
    ),
    // The architecture-level pick of bench/README.proxies.md ("Combined
    // terminals"), evolved on phoneme + spambase.
    (
        "evolved_combined",
        include_str!("../evolved/evolved_combined.expr"),
    ),
];

/// A proxy to score with: a standard one or an evolved expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Proxy {
    /// One of the standard proxies.
    Standard(ProxyKind),
    /// An evolved per-layer expression and the name it is reported under.
    Evolved {
        /// Its name (bundled name or file stem).
        name: String,
        /// The expression.
        expression: Expression,
    },
    /// An evolved architecture-level expression (over standard proxies'
    /// scores and per-layer expressions) and its name.
    Combined {
        /// Its name (file stem).
        name: String,
        /// The expression.
        expression: ScalarExpr,
    },
}

/// Why a named proxy cannot be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamedProxyError {
    /// Neither a standard proxy, a bundled evolved one, nor a file.
    #[error("unknown proxy {0:?} (standard: grad_norm, snip, grasp, fisher, synflow, jacob_cov, naswot, zen, zico, expressflow, params, flops; evolved: {bundled}; or a saved expression file NAME.expr)", bundled = bundled_names())]
    Unknown(String),
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no expression.
    #[error("{path}: no expression in the file (only comments or blank lines)")]
    Empty {
        /// The file.
        path: String,
    },
    /// The expression does not parse.
    #[error("{path}: line {line}: {source}")]
    Parse {
        /// The file (or bundled name).
        path: String,
        /// Its line (from 1).
        line: usize,
        /// The parse error.
        source: ExpressionParseError,
    },
}

fn bundled_names() -> String {
    BUNDLED_EVOLVED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The expression of a saved file's text: the first line that is neither
/// blank nor a `#` comment, at either level (a lone per-layer expression is
/// the terminal of an architecture-level one). `origin` names the text in
/// errors.
pub fn parse_saved(origin: &str, text: &str) -> Result<ScalarExpr, NamedProxyError> {
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .ok_or_else(|| NamedProxyError::Empty {
            path: origin.to_owned(),
        })?;
    line.trim()
        .parse()
        .map_err(|source| NamedProxyError::Parse {
            path: origin.to_owned(),
            line: index + 1,
            source,
        })
}

impl Proxy {
    /// A standard proxy's name or a bundled evolved one's.
    pub fn by_name(name: &str) -> Result<Proxy, NamedProxyError> {
        if let Ok(kind) = name.parse::<ProxyKind>() {
            return Ok(Proxy::Standard(kind));
        }
        let key = name.trim().to_ascii_lowercase().replace('-', "_");
        let (bundled, text) = BUNDLED_EVOLVED
            .iter()
            .find(|(n, _)| *n == key)
            .ok_or_else(|| NamedProxyError::Unknown(name.to_owned()))?;
        Ok(Proxy::evolved(bundled, parse_saved(bundled, text)?))
    }

    /// An evolved proxy named `name`: [`Proxy::Evolved`] for a lone
    /// per-layer expression, else [`Proxy::Combined`].
    pub fn evolved(name: &str, expression: ScalarExpr) -> Proxy {
        match expression {
            ScalarExpr::Terminal(Terminal::Layers(expression)) => Proxy::Evolved {
                name: name.to_owned(),
                expression,
            },
            expression => Proxy::Combined {
                name: name.to_owned(),
                expression,
            },
        }
    }

    /// A saved expression file, named after its stem.
    pub fn from_file(path: &Path) -> Result<Proxy, NamedProxyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| NamedProxyError::Read {
            path: shown.clone(),
            source,
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| shown.clone(), |s| s.to_string_lossy().into_owned());
        Ok(Proxy::evolved(&name, parse_saved(&shown, &text)?))
    }

    /// A name ([`Proxy::by_name`]), or a path to a saved expression when it
    /// ends in `.expr` or names a directory.
    pub fn resolve(text: &str) -> Result<Proxy, NamedProxyError> {
        if text.ends_with(".expr") || text.contains('/') {
            Proxy::from_file(Path::new(text))
        } else {
            Proxy::by_name(text)
        }
    }

    /// The name it is reported under.
    pub fn name(&self) -> &str {
        match self {
            Proxy::Standard(kind) => kind.name(),
            Proxy::Evolved { name, .. } | Proxy::Combined { name, .. } => name,
        }
    }

    /// Scores `spec`'s untrained network on `data` (seeded), higher =
    /// predicted better, as [`crate::score`] does for standard proxies.
    pub fn score(&self, spec: &ModelSpec, data: &ProxyData, seed: u64) -> Result<f64, ProxyError> {
        match self {
            Proxy::Standard(kind) => crate::score(*kind, spec, data, seed),
            Proxy::Evolved { expression, .. } => {
                let value = expression.score(&layer_tensors(spec, data, seed)?);
                Ok(not_nan(value))
            }
            Proxy::Combined { expression, .. } => {
                // Only the proxies and tensors it reads, on the same
                // minibatch and seed as the standard proxies.
                let inputs = scalar_inputs(
                    spec,
                    data,
                    seed,
                    &expression.proxies_used(),
                    expression.reads_layers(),
                )?;
                Ok(not_nan(expression.score(&inputs)))
            }
        }
    }
}

/// As for standard proxies: degenerate is -∞, never NaN.
fn not_nan(value: f64) -> f64 {
    if value.is_nan() {
        f64::NEG_INFINITY
    } else {
        value
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_standard_bundled_and_saved_proxies() {
        assert_eq!(
            Proxy::by_name("zen").unwrap(),
            Proxy::Standard(ProxyKind::Zen)
        );
        for (name, _) in BUNDLED_EVOLVED {
            let p = Proxy::by_name(name).expect("bundled parses");
            assert_eq!(p.name(), *name);
            assert!(matches!(
                (*name, &p),
                ("evolved_phoneme", Proxy::Evolved { .. })
                    | ("evolved_combined", Proxy::Combined { .. })
            ));
        }
        let err = Proxy::by_name("nope").unwrap_err().to_string();
        assert!(err.contains("evolved_phoneme"), "{err}");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mine.expr");
        std::fs::write(&path, "# evolved here\n\nsum_layers(norm(mul(W, dW)))\n").unwrap();
        match Proxy::resolve(path.to_str().unwrap()).expect("reads") {
            Proxy::Evolved { name, expression } => {
                assert_eq!(name, "mine");
                assert_eq!(expression.to_string(), "sum_layers(norm(mul(W, dW)))");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "# comment\nsum_layers(norm(mul(W, A)))\n").unwrap();
        let err = Proxy::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, "# only a comment\n").unwrap();
        assert!(matches!(
            Proxy::from_file(&path),
            Err(NamedProxyError::Empty { .. })
        ));
    }

    #[test]
    fn a_saved_combination_scores_as_its_terminals_combined_by_hand() {
        use crate::{LossKind, ProxyBatch};
        use nn_plan::{Activation, Backbone, Norm};
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("combo.expr");
        std::fs::write(
            &path,
            "# evolved here\nsub(zen, mul(log(params), sum_layers(norm(dW))))\n",
        )
        .unwrap();
        let proxy = Proxy::resolve(path.to_str().unwrap()).expect("reads");
        assert!(matches!(proxy, Proxy::Combined { .. }), "{proxy:?}");
        assert_eq!(proxy.name(), "combo");
        let spec = ModelSpec {
            backbone: Backbone::Mlp { widths: vec![6, 4] },
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::None,
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let batch = ProxyBatch {
            x: ndarray::Array2::from_shape_fn((10, 3), |_| rng.gen_range(-1.0f32..1.0)),
            y: ndarray::Array1::from_shape_fn(10, |i| (i % 2) as f32),
        };
        let data = ProxyData::new(vec![batch], LossKind::SoftmaxCrossEntropy, 2).unwrap();
        // Each part through its own entry point.
        let zen = crate::score(ProxyKind::Zen, &spec, &data, 5).unwrap();
        let params = crate::score(ProxyKind::Params, &spec, &data, 5).unwrap();
        let layers: Expression = "sum_layers(norm(dW))".parse().unwrap();
        let per_layer = layers.score(&layer_tensors(&spec, &data, 5).unwrap());
        // 3·6 + 6 + 6·4 + 4 + 4·2 + 2 parameters.
        assert_eq!(params, 62.0);
        let by_hand = zen - (62.0f64 + 1e-8).ln() * per_layer;
        let got = proxy.score(&spec, &data, 5).unwrap();
        assert!(
            (got - by_hand).abs() < 1e-9 * by_hand.abs().max(1.0),
            "{got} vs {by_hand}"
        );
        // A lone per-layer expression in a file stays the tensor level.
        std::fs::write(&path, "max_layers(norm(dW))\n").unwrap();
        assert!(matches!(
            Proxy::from_file(&path).unwrap(),
            Proxy::Evolved { .. }
        ));
        // A proxy that needs more batches than given is an error, not a
        // score.
        std::fs::write(&path, "add(zico, zen)\n").unwrap();
        let zico = Proxy::from_file(&path).unwrap();
        assert!(matches!(
            zico.score(&spec, &data, 5),
            Err(ProxyError::Batches { .. })
        ));
    }
}
