//! Search spaces: typed parameters with conditions, loaded from TOML, and the
//! operations strategies need on configurations (sample, mutate, cross over,
//! project onto a finite set of allowed configurations, canonical encoding).
//!
//! A [`Config`] holds only the parameters that are active under their
//! conditions, in a `BTreeMap`, so its JSON encoding is canonical: two equal
//! configurations always have the same [`Config::key`], which studies use to
//! never evaluate a configuration twice.
//!
//! Invariant: parameters are stored parents-first (a condition refers only to
//! a parameter declared before it), so resolving a configuration is one pass.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default tabular MLP/ResNet space, shipped with the crate.
pub const DEFAULT_SPACE_TOML: &str = include_str!("../spaces/default.toml");

/// A parameter value. Encoded in JSON as a plain boolean, integer, float or
/// string (an integer and a float of the same magnitude are distinct values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string (categorical label).
    Str(String),
}

impl ParamValue {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(x) => Some(*x),
            _ => None,
        }
    }
    /// The value as a string label, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Parses a table cell: integer, then float, then boolean, else string.
    pub fn parse_cell(cell: &str) -> ParamValue {
        let cell = cell.trim();
        if let Ok(i) = cell.parse::<i64>() {
            return ParamValue::Int(i);
        }
        if let Ok(x) = cell.parse::<f64>() {
            if x.is_finite() {
                return ParamValue::Float(x);
            }
        }
        match cell {
            "true" => ParamValue::Bool(true),
            "false" => ParamValue::Bool(false),
            _ => ParamValue::Str(cell.to_string()),
        }
    }
    /// Whether two values are the same choice (an integer equals a float of
    /// the same value, so a TOML `[2, 3]` condition matches `2.0`).
    fn same_as(&self, other: &ParamValue) -> bool {
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// The values a parameter may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ParamDomain {
    /// One of a list. When every choice is a number the list is treated as
    /// ordered (mutation prefers neighbours, distances use positions).
    Categorical {
        /// The choices, at least one, no duplicates.
        choices: Vec<ParamValue>,
    },
    /// An integer in `low..=high`, uniform or log-uniform.
    Int {
        /// Smallest value.
        low: i64,
        /// Largest value.
        high: i64,
        /// Sample log-uniformly (requires `low >= 1`).
        #[serde(default)]
        log: bool,
    },
    /// A float in `low..=high`, uniform or log-uniform.
    Float {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
        /// Sample log-uniformly (requires `low > 0`).
        #[serde(default)]
        log: bool,
    },
}

/// When a conditional parameter is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionRule {
    /// The parent's value is one of these.
    In(Vec<ParamValue>),
    /// The parent's numeric value is at least this.
    AtLeast(f64),
    /// The parent's numeric value is at most this.
    AtMost(f64),
}

/// A parameter is active only if `parent` is active and satisfies `rule`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Name of the parent parameter (declared earlier).
    pub parent: String,
    /// What the parent's value must satisfy.
    pub rule: ConditionRule,
}

impl Condition {
    fn holds(&self, parent_value: Option<&ParamValue>) -> bool {
        let Some(v) = parent_value else {
            return false;
        };
        match &self.rule {
            ConditionRule::In(values) => values.iter().any(|c| c.same_as(v)),
            ConditionRule::AtLeast(x) => v.as_f64().is_some_and(|n| n >= *x),
            ConditionRule::AtMost(x) => v.as_f64().is_some_and(|n| n <= *x),
        }
    }
}

/// One parameter of a space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Unique name; the key in configurations.
    pub name: String,
    /// Values it may take.
    pub domain: ParamDomain,
    /// Active only under this condition (always active if `None`).
    pub condition: Option<Condition>,
}

/// A configuration: the active parameters and their values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Config(pub BTreeMap<String, ParamValue>);

impl Config {
    /// Canonical JSON encoding (sorted keys); equal configs give equal keys.
    pub fn key(&self) -> String {
        // A BTreeMap of plain values always serialises.
        serde_json::to_string(&self.0).unwrap_or_default()
    }
    /// Decodes a configuration from its JSON encoding.
    pub fn from_json(json: &str) -> Result<Config, SpaceError> {
        serde_json::from_str(json).map_err(|e| SpaceError::BadConfig {
            message: format!("not a configuration object: {e}"),
        })
    }
    /// Value of a parameter, if active.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.get(name)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// Errors about spaces and configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpaceError {
    /// The space file could not be read.
    #[error("cannot read search space {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML could not be parsed.
    #[error("search space {file}: {message}")]
    Parse {
        /// The file (or `<default>` / `<string>`).
        file: String,
        /// Parser message, with line and column.
        message: String,
    },
    /// A parameter declaration is invalid.
    #[error("search space {file}: param[{index}] ({name}): key `{key}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// Position of the `[[param]]` table.
        index: usize,
        /// Parameter name (may be empty if missing).
        name: String,
        /// The offending key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration does not fit the space.
    #[error("invalid configuration: {message}")]
    BadConfig {
        /// What is wrong.
        message: String,
    },
}

/// A search space: parameters (parents first) and, optionally, the finite
/// set of configurations that may be proposed (e.g. the rows of a lookup
/// table); strategies then project every candidate onto that set.
#[derive(Debug, Clone)]
pub struct SearchSpace {
    params: Vec<Param>,
    allowed: Option<Arc<AllowedSet>>,
}

/// The allowed configurations of a finite space with their canonical keys
/// and distance codes, encoded once here: proposals test every allowed
/// configuration against the seen set and measure its distance to the
/// candidate, and encoding them on each proposal dominated its cost.
#[derive(Debug)]
struct AllowedSet {
    configs: Vec<Config>,
    /// `configs[i].key()`, same order.
    config_keys: Vec<String>,
    keys: HashSet<String>,
    /// Row `i`'s distance codes, `codes[i * n_params + p]` for parameter
    /// `p` (see [`DistanceCode`]): projection is a scan over these floats.
    codes: Vec<f64>,
}

/// How [`SearchSpace::distance`] compares one parameter, with each value
/// coded as one float so a table can be coded once: `NaN` for an inactive
/// parameter, otherwise the position among the choices (`-1` for a value
/// that is not one of them) or the (log-)value of a number.
#[derive(Debug, Clone, Copy)]
enum DistanceCode {
    /// Ordered numeric choices: `|position difference| / span`.
    Ordered { span: f64 },
    /// Unordered choices (or a single one): 0 if the same choice, else 1.
    Unordered,
    /// A number on `[lo, hi]` (log scale where declared, values below `low`
    /// taken at `low`): `min(|difference| / (hi - lo), 1)`, 0 if `hi == lo`.
    Number {
        low: f64,
        lo: f64,
        hi: f64,
        log: bool,
    },
}

impl DistanceCode {
    fn of(domain: &ParamDomain) -> DistanceCode {
        match domain {
            ParamDomain::Categorical { choices } if ordered(choices) && choices.len() > 1 => {
                DistanceCode::Ordered {
                    span: (choices.len() - 1) as f64,
                }
            }
            ParamDomain::Categorical { .. } => DistanceCode::Unordered,
            ParamDomain::Int { low, high, log } => {
                DistanceCode::number(*low as f64, *high as f64, *log)
            }
            ParamDomain::Float { low, high, log } => DistanceCode::number(*low, *high, *log),
        }
    }

    fn number(low: f64, high: f64, log: bool) -> DistanceCode {
        let (lo, hi) = if log {
            (low.ln(), high.ln())
        } else {
            (low, high)
        };
        DistanceCode::Number { low, lo, hi, log }
    }

    /// The code of a value (`NaN` if inactive). A value that cannot be coded
    /// (not a choice, a number domain holding a non-number) is 1 away from
    /// every active value, which the codes `-1` (never a position) and
    /// `+inf` (clamped to 1) give.
    fn encode(&self, domain: &ParamDomain, v: Option<&ParamValue>) -> f64 {
        let Some(v) = v else { return f64::NAN };
        match (self, domain) {
            (_, ParamDomain::Categorical { choices }) => choices
                .iter()
                .position(|c| c == v)
                .map_or(-1.0, |i| i as f64),
            (DistanceCode::Number { low, log, .. }, _) => match v.as_f64() {
                Some(x) if *log => x.max(*low).ln(),
                Some(x) => x,
                None => f64::INFINITY,
            },
            _ => f64::INFINITY,
        }
    }

    /// Distance between two codes, as `value_distance` between the values.
    #[inline]
    fn between(&self, a: f64, b: f64) -> f64 {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => return 0.0,
            (true, false) | (false, true) => return 1.0,
            _ => {}
        }
        match *self {
            DistanceCode::Ordered { span } => {
                if a < 0.0 || b < 0.0 {
                    1.0
                } else {
                    (a - b).abs() / span
                }
            }
            DistanceCode::Unordered => {
                if a == b && a >= 0.0 {
                    0.0
                } else {
                    1.0
                }
            }
            DistanceCode::Number { lo, hi, .. } => {
                if a.is_infinite() || b.is_infinite() {
                    1.0
                } else if hi > lo {
                    ((a - b) / (hi - lo)).abs().min(1.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Serialised form of a space, as stored in study metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceDefinition {
    /// Parameters, parents first.
    pub params: Vec<Param>,
    /// Allowed configurations, if the space is finite.
    #[serde(default)]
    pub allowed: Option<Vec<Config>>,
}

// ---- TOML form ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    #[serde(default)]
    param: Vec<toml::Table>,
}

impl SearchSpace {
    /// Builds a space from parameters, checking names, domains and that every
    /// condition refers to an earlier parameter.
    pub fn new(params: Vec<Param>) -> Result<SearchSpace, SpaceError> {
        let mut seen: HashSet<&str> = HashSet::new();
        for (index, p) in params.iter().enumerate() {
            let invalid = |key: &str, message: String| SpaceError::Invalid {
                file: "<space>".into(),
                index,
                name: p.name.clone(),
                key: key.into(),
                message,
            };
            if p.name.is_empty() {
                return Err(invalid("name", "empty name".into()));
            }
            if !seen.insert(&p.name) {
                return Err(invalid("name", "duplicate parameter name".into()));
            }
            validate_domain(&p.domain).map_err(|(k, m)| invalid(k, m))?;
            if let Some(c) = &p.condition {
                if !seen.contains(c.parent.as_str()) || c.parent == p.name {
                    return Err(invalid(
                        "when.param",
                        format!(
                            "condition refers to `{}`, which is not declared before this parameter",
                            c.parent
                        ),
                    ));
                }
            }
        }
        Ok(SearchSpace {
            params,
            allowed: None,
        })
    }

    /// Loads a space from a TOML file (see `spaces/default.toml` for the
    /// format). Errors name the file, the parameter and the key.
    pub fn from_toml_file(path: &Path) -> Result<SearchSpace, SpaceError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpaceError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The default tabular MLP/ResNet space.
    pub fn default_tabular() -> SearchSpace {
        // The embedded file is tested to parse (see tests below).
        Self::from_toml_str(DEFAULT_SPACE_TOML, "<default>")
            .expect("the embedded default space is valid")
    }

    /// Parses a space from TOML text; `file` names it in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<SearchSpace, SpaceError> {
        let parsed: SpaceFile = toml::from_str(text).map_err(|e| SpaceError::Parse {
            file: file.into(),
            message: e.to_string(),
        })?;
        let mut params = Vec::new();
        for (index, table) in parsed.param.iter().enumerate() {
            params.push(param_from_toml(table, index, file)?);
        }
        SearchSpace::new(params).map_err(|e| match e {
            SpaceError::Invalid {
                index,
                name,
                key,
                message,
                ..
            } => SpaceError::Invalid {
                file: file.into(),
                index,
                name,
                key,
                message,
            },
            other => other,
        })
    }

    /// Restricts proposals to these configurations (each must fit the space).
    pub fn with_allowed(mut self, configs: Vec<Config>) -> Result<SearchSpace, SpaceError> {
        if configs.is_empty() {
            return Err(SpaceError::BadConfig {
                message: "the set of allowed configurations is empty".into(),
            });
        }
        let mut keys = HashSet::new();
        let mut unique = Vec::new();
        let mut config_keys = Vec::new();
        for c in configs {
            self.validate(&c)?;
            let key = c.key();
            if keys.insert(key.clone()) {
                unique.push(c);
                config_keys.push(key);
            }
        }
        let coders: Vec<DistanceCode> = self
            .params
            .iter()
            .map(|p| DistanceCode::of(&p.domain))
            .collect();
        let codes = unique
            .iter()
            .flat_map(|c| {
                self.params
                    .iter()
                    .zip(&coders)
                    .map(|(p, code)| code.encode(&p.domain, c.get(&p.name)))
            })
            .collect();
        self.allowed = Some(Arc::new(AllowedSet {
            configs: unique,
            config_keys,
            keys,
            codes,
        }));
        Ok(self)
    }

    /// The parameters, parents first.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The allowed configurations, if the space is finite.
    pub fn allowed(&self) -> Option<&[Config]> {
        self.allowed.as_ref().map(|a| a.configs.as_slice())
    }

    /// Canonical keys of the allowed configurations (same order as
    /// [`SearchSpace::allowed`]), if the space is finite.
    pub fn allowed_keys(&self) -> Option<&[String]> {
        self.allowed.as_ref().map(|a| a.config_keys.as_slice())
    }

    /// Indices (into [`SearchSpace::allowed`]) of the allowed configurations
    /// whose key is not in `seen`; `None` for an infinite space.
    pub fn unseen_rows<K: Borrow<str> + Hash + Eq>(&self, seen: &HashSet<K>) -> Option<Vec<usize>> {
        let allowed = self.allowed.as_ref()?;
        Some(
            allowed
                .config_keys
                .iter()
                .enumerate()
                .filter(|(_, key)| !seen.contains(key.as_str()))
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// Serialisable definition (for study metadata).
    pub fn definition(&self) -> SpaceDefinition {
        SpaceDefinition {
            params: self.params.clone(),
            allowed: self.allowed.as_ref().map(|a| a.configs.clone()),
        }
    }

    /// Rebuilds a space from its definition.
    pub fn from_definition(def: SpaceDefinition) -> Result<SearchSpace, SpaceError> {
        let space = SearchSpace::new(def.params)?;
        match def.allowed {
            Some(configs) => space.with_allowed(configs),
            None => Ok(space),
        }
    }

    /// Checks that a configuration holds exactly the active parameters, each
    /// within its domain (and, for a finite space, that it is allowed).
    pub fn validate(&self, config: &Config) -> Result<(), SpaceError> {
        let bad = |message: String| SpaceError::BadConfig { message };
        for p in &self.params {
            let active = self.is_active(p, config);
            match (active, config.get(&p.name)) {
                (true, None) => return Err(bad(format!("active parameter `{}` missing", p.name))),
                (false, Some(_)) => {
                    return Err(bad(format!(
                        "parameter `{}` set but inactive under its condition",
                        p.name
                    )))
                }
                (true, Some(v)) if !in_domain(&p.domain, v) => {
                    return Err(bad(format!(
                        "parameter `{}` = {v} is outside its domain",
                        p.name
                    )))
                }
                _ => {}
            }
        }
        for name in config.0.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                return Err(bad(format!("unknown parameter `{name}`")));
            }
        }
        if let Some(allowed) = &self.allowed {
            if !allowed.keys.contains(&config.key()) {
                return Err(bad(format!(
                    "configuration {config} is not among the allowed ones"
                )));
            }
        }
        Ok(())
    }

    fn is_active(&self, p: &Param, config: &Config) -> bool {
        p.condition
            .as_ref()
            .is_none_or(|c| c.holds(config.get(&c.parent)))
    }

    /// Completes a partial assignment: inactive parameters are dropped,
    /// missing active ones are sampled. Used after mutation and crossover.
    pub fn resolve<R: Rng + ?Sized>(&self, partial: &Config, rng: &mut R) -> Config {
        let mut out = Config::default();
        for p in &self.params {
            if !self.is_active(p, &out) {
                continue;
            }
            let v = match partial.get(&p.name) {
                Some(v) if in_domain(&p.domain, v) => v.clone(),
                _ => sample_domain(&p.domain, rng),
            };
            out.0.insert(p.name.clone(), v);
        }
        out
    }

    /// Samples a configuration uniformly (per parameter, log-uniform where
    /// declared; uniformly among allowed configurations for a finite space).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Config {
        if let Some(allowed) = &self.allowed {
            if let Some(c) = allowed.configs.choose(rng) {
                return c.clone();
            }
        }
        self.resolve(&Config::default(), rng)
    }

    /// Samples a configuration whose key is not in `seen`, or `None` when the
    /// space looks exhausted (finite space: all allowed seen; otherwise 100
    /// consecutive draws were all seen).
    pub fn sample_unseen<R: Rng + ?Sized, K: Borrow<str> + Hash + Eq>(
        &self,
        rng: &mut R,
        seen: &HashSet<K>,
    ) -> Option<Config> {
        if let Some(allowed) = &self.allowed {
            let fresh: Vec<&Config> = allowed
                .configs
                .iter()
                .zip(&allowed.config_keys)
                .filter(|(_, key)| !seen.contains(key.as_str()))
                .map(|(c, _)| c)
                .collect();
            return fresh.choose(rng).map(|c| (*c).clone());
        }
        (0..100)
            .map(|_| self.sample(rng))
            .find(|c| !seen.contains(c.key().as_str()))
    }

    /// Mutates a configuration: each active parameter changes with
    /// probability `rate` (at least one changes); numbers move by a Gaussian
    /// step of 20% of their (log) range, ordered choices prefer neighbours.
    pub fn mutate<R: Rng + ?Sized>(&self, config: &Config, rate: f64, rng: &mut R) -> Config {
        let active: Vec<&Param> = self
            .params
            .iter()
            .filter(|p| config.get(&p.name).is_some())
            .collect();
        if active.is_empty() {
            return self.sample(rng);
        }
        let forced = rng.gen_range(0..active.len());
        let mut partial = config.clone();
        for (i, p) in active.iter().enumerate() {
            if i != forced && !rng.gen_bool(rate.clamp(0.0, 1.0)) {
                continue;
            }
            if let Some(v) = config.get(&p.name) {
                let nv = mutate_value(&p.domain, v, rng);
                partial.0.insert(p.name.clone(), nv);
            }
        }
        self.resolve(&partial, rng)
    }

    /// Uniform crossover: each parameter from one parent or the other.
    pub fn crossover<R: Rng + ?Sized>(&self, a: &Config, b: &Config, rng: &mut R) -> Config {
        let mut partial = Config::default();
        for p in &self.params {
            let pick = if rng.gen_bool(0.5) { a } else { b };
            let other = if std::ptr::eq(pick, a) { b } else { a };
            if let Some(v) = pick.get(&p.name).or_else(|| other.get(&p.name)) {
                partial.0.insert(p.name.clone(), v.clone());
            }
        }
        self.resolve(&partial, rng)
    }

    /// Normalised distance between two configurations (0 = equal): the sum
    /// over parameters of 1 when active in only one, 0/1 for unordered
    /// choices, and the difference in (log-)range or ordered position.
    pub fn distance(&self, a: &Config, b: &Config) -> f64 {
        self.params
            .iter()
            .map(|p| match (a.get(&p.name), b.get(&p.name)) {
                (None, None) => 0.0,
                (Some(_), None) | (None, Some(_)) => 1.0,
                (Some(x), Some(y)) => value_distance(&p.domain, x, y),
            })
            .sum()
    }

    /// Makes a candidate proposable: for an infinite space, the candidate
    /// itself unless already seen; for a finite space, the nearest allowed
    /// configuration not yet seen (ties broken at random). `None` when
    /// nothing unseen remains.
    pub fn project_unseen<R: Rng + ?Sized, K: Borrow<str> + Hash + Eq>(
        &self,
        candidate: &Config,
        seen: &HashSet<K>,
        rng: &mut R,
    ) -> Option<Config> {
        let Some(allowed) = &self.allowed else {
            return (!seen.contains(candidate.key().as_str())).then(|| candidate.clone());
        };
        let rows = allowed
            .config_keys
            .iter()
            .enumerate()
            .filter(|(_, key)| !seen.contains(key.as_str()))
            .map(|(i, _)| i);
        self.nearest_row(candidate, rows, rng)
            .map(|i| allowed.configs[i].clone())
    }

    /// Of the allowed configurations with these indices, the one nearest to
    /// `candidate` by [`SearchSpace::distance`] (ties broken at random);
    /// `None` for an infinite space or no rows. Rows are compared through
    /// their distance codes, computed once per space: a scan over floats.
    pub fn nearest_row<R: Rng + ?Sized>(
        &self,
        candidate: &Config,
        rows: impl IntoIterator<Item = usize>,
        rng: &mut R,
    ) -> Option<usize> {
        let allowed = self.allowed.as_ref()?;
        let n = self.params.len();
        let coders: Vec<DistanceCode> = self
            .params
            .iter()
            .map(|p| DistanceCode::of(&p.domain))
            .collect();
        let cand: Vec<f64> = self
            .params
            .iter()
            .zip(&coders)
            .map(|(p, code)| code.encode(&p.domain, candidate.get(&p.name)))
            .collect();
        let mut best: Vec<usize> = Vec::new();
        let mut best_d = f64::INFINITY;
        for i in rows {
            let row = &allowed.codes[i * n..(i + 1) * n];
            let mut d = 0.0;
            for ((code, &a), &b) in coders.iter().zip(&cand).zip(row) {
                d += code.between(a, b);
            }
            if d < best_d - 1e-12 {
                best_d = d;
                best.clear();
                best.push(i);
            } else if (d - best_d).abs() <= 1e-12 {
                best.push(i);
            }
        }
        best.choose(rng).copied()
    }

    /// Number of distinct configurations if finite and known.
    pub fn size_hint(&self) -> Option<usize> {
        self.allowed.as_ref().map(|a| a.configs.len())
    }

    /// Derives a finite space from rows (e.g. of a lookup table): each named
    /// column becomes a categorical parameter over its observed values
    /// (numbers sorted, so they count as ordered); a column empty in some
    /// rows becomes conditional on the first column whose values explain
    /// when it is present. The rows become the allowed set.
    pub fn derive_from_rows(
        names: &[String],
        rows: &[Vec<Option<ParamValue>>],
    ) -> Result<SearchSpace, SpaceError> {
        let mut params: Vec<Param> = Vec::new();
        for (col, name) in names.iter().enumerate() {
            let mut choices: Vec<ParamValue> = Vec::new();
            for row in rows {
                if let Some(v) = &row[col] {
                    if !choices.iter().any(|c| c == v) {
                        choices.push(v.clone());
                    }
                }
            }
            if choices.is_empty() {
                return Err(SpaceError::BadConfig {
                    message: format!("table column `{name}` is empty in every row"),
                });
            }
            if choices.iter().all(|c| c.as_f64().is_some()) {
                choices.sort_by(|a, b| {
                    a.as_f64()
                        .partial_cmp(&b.as_f64())
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            }
            let sometimes_empty = rows.iter().any(|r| r[col].is_none());
            let condition = if sometimes_empty {
                Some(derive_condition(names, rows, col, &params).ok_or_else(|| {
                    SpaceError::BadConfig {
                        message: format!(
                            "table column `{name}` is empty in some rows, and no earlier column's values say when"
                        ),
                    }
                })?)
            } else {
                None
            };
            params.push(Param {
                name: name.clone(),
                domain: ParamDomain::Categorical { choices },
                condition,
            });
        }
        let space = SearchSpace::new(params)?;
        let configs: Vec<Config> = rows
            .iter()
            .map(|row| {
                Config(
                    names
                        .iter()
                        .zip(row)
                        .filter_map(|(n, v)| v.clone().map(|v| (n.clone(), v)))
                        .collect(),
                )
            })
            .collect();
        space.with_allowed(configs)
    }
}

/// Finds an earlier column whose value set, in rows where `col` is present,
/// is disjoint from its value set in rows where `col` is empty.
fn derive_condition(
    names: &[String],
    rows: &[Vec<Option<ParamValue>>],
    col: usize,
    earlier: &[Param],
) -> Option<Condition> {
    for parent in earlier {
        let pcol = names.iter().position(|n| n == &parent.name)?;
        let mut when_present: Vec<ParamValue> = Vec::new();
        let mut when_absent: Vec<ParamValue> = Vec::new();
        let mut parent_missing_while_present = false;
        for r in rows {
            match (&r[pcol], r[col].is_some()) {
                (Some(v), true) if !when_present.contains(v) => when_present.push(v.clone()),
                (Some(v), false) if !when_absent.contains(v) => when_absent.push(v.clone()),
                (None, true) => parent_missing_while_present = true,
                _ => {}
            }
        }
        if !parent_missing_while_present && when_present.iter().all(|v| !when_absent.contains(v)) {
            return Some(Condition {
                parent: parent.name.clone(),
                rule: ConditionRule::In(when_present),
            });
        }
    }
    None
}

fn param_from_toml(table: &toml::Table, index: usize, file: &str) -> Result<Param, SpaceError> {
    let name = table
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let invalid = |key: &str, message: &str| SpaceError::Invalid {
        file: file.into(),
        index,
        name: name.clone(),
        key: key.into(),
        message: message.into(),
    };
    if name.is_empty() {
        return Err(invalid("name", "missing or not a string"));
    }
    let allowed_keys = ["name", "type", "choices", "low", "high", "log", "when"];
    if let Some(k) = table.keys().find(|k| !allowed_keys.contains(&k.as_str())) {
        return Err(invalid(k, "unknown key"));
    }
    let kind = table.get("type").and_then(|v| v.as_str()).ok_or_else(|| {
        invalid(
            "type",
            "missing; expected \"categorical\", \"int\" or \"float\"",
        )
    })?;
    let log = match table.get("log") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("log", "expected true or false"))?,
    };
    let domain = match kind {
        "categorical" => {
            let arr = table
                .get("choices")
                .and_then(|v| v.as_array())
                .ok_or_else(|| invalid("choices", "missing or not an array"))?;
            let choices = arr
                .iter()
                .map(toml_to_value)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(
                        "choices",
                        "choices must be strings, integers, floats or booleans",
                    )
                })?;
            ParamDomain::Categorical { choices }
        }
        "int" => {
            let low = table
                .get("low")
                .and_then(|v| v.as_integer())
                .ok_or_else(|| invalid("low", "missing or not an integer"))?;
            let high = table
                .get("high")
                .and_then(|v| v.as_integer())
                .ok_or_else(|| invalid("high", "missing or not an integer"))?;
            ParamDomain::Int { low, high, log }
        }
        "float" => {
            let num = |key: &str| {
                table
                    .get(key)
                    .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
                    .ok_or_else(|| invalid(key, "missing or not a number"))
            };
            ParamDomain::Float {
                low: num("low")?,
                high: num("high")?,
                log,
            }
        }
        other => {
            return Err(invalid(
                "type",
                &format!(
                    "unknown type \"{other}\"; expected \"categorical\", \"int\" or \"float\""
                ),
            ))
        }
    };
    if table.contains_key("log") && matches!(domain, ParamDomain::Categorical { .. }) {
        return Err(invalid("log", "only int and float parameters take `log`"));
    }
    validate_domain(&domain).map_err(|(k, m)| invalid(k, &m))?;
    let condition = match table.get("when") {
        None => None,
        Some(w) => {
            let w = w.as_table().ok_or_else(|| {
                invalid(
                    "when",
                    "expected a table like { param = \"n_layers\", at_least = 2 }",
                )
            })?;
            let parent = w
                .get("param")
                .and_then(|v| v.as_str())
                .ok_or_else(|| invalid("when.param", "missing or not a string"))?
                .to_string();
            let rule = if let Some(v) = w.get("in") {
                let arr = v
                    .as_array()
                    .ok_or_else(|| invalid("when.in", "expected an array"))?;
                let vals = arr
                    .iter()
                    .map(toml_to_value)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        invalid("when.in", "values must be strings, numbers or booleans")
                    })?;
                ConditionRule::In(vals)
            } else if let Some(v) = w.get("at_least") {
                ConditionRule::AtLeast(
                    toml_number(v).ok_or_else(|| invalid("when.at_least", "expected a number"))?,
                )
            } else if let Some(v) = w.get("at_most") {
                ConditionRule::AtMost(
                    toml_number(v).ok_or_else(|| invalid("when.at_most", "expected a number"))?,
                )
            } else {
                return Err(invalid(
                    "when",
                    "expected one of `in`, `at_least`, `at_most`",
                ));
            };
            Some(Condition { parent, rule })
        }
    };
    Ok(Param {
        name,
        domain,
        condition,
    })
}

fn toml_number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

fn toml_to_value(v: &toml::Value) -> Option<ParamValue> {
    match v {
        toml::Value::String(s) => Some(ParamValue::Str(s.clone())),
        toml::Value::Integer(i) => Some(ParamValue::Int(*i)),
        toml::Value::Float(x) if x.is_finite() => Some(ParamValue::Float(*x)),
        toml::Value::Boolean(b) => Some(ParamValue::Bool(*b)),
        _ => None,
    }
}

fn validate_domain(d: &ParamDomain) -> Result<(), (&'static str, String)> {
    match d {
        ParamDomain::Categorical { choices } => {
            if choices.is_empty() {
                return Err(("choices", "needs at least one choice".into()));
            }
            for (i, c) in choices.iter().enumerate() {
                if matches!(c, ParamValue::Float(x) if !x.is_finite()) {
                    return Err(("choices", "floats must be finite".into()));
                }
                if choices[..i].contains(c) {
                    return Err(("choices", format!("duplicate choice {c}")));
                }
            }
        }
        ParamDomain::Int { low, high, log } => {
            if low > high {
                return Err(("low", format!("low {low} is above high {high}")));
            }
            if *log && *low < 1 {
                return Err(("log", "log scale needs low >= 1".into()));
            }
        }
        ParamDomain::Float { low, high, log } => {
            if !(low.is_finite() && high.is_finite()) || low > high {
                return Err(("low", format!("need finite low <= high, got {low}..{high}")));
            }
            if *log && *low <= 0.0 {
                return Err(("log", "log scale needs low > 0".into()));
            }
        }
    }
    Ok(())
}

fn in_domain(d: &ParamDomain, v: &ParamValue) -> bool {
    match (d, v) {
        (ParamDomain::Categorical { choices }, v) => choices.iter().any(|c| c == v),
        (ParamDomain::Int { low, high, .. }, ParamValue::Int(i)) => low <= i && i <= high,
        (ParamDomain::Float { low, high, .. }, ParamValue::Float(x)) => *low <= *x && *x <= *high,
        _ => false,
    }
}

fn ordered(choices: &[ParamValue]) -> bool {
    choices.iter().all(|c| c.as_f64().is_some())
}

fn sample_domain<R: Rng + ?Sized>(d: &ParamDomain, rng: &mut R) -> ParamValue {
    match d {
        ParamDomain::Categorical { choices } => choices
            .choose(rng)
            .cloned()
            .unwrap_or(ParamValue::Bool(false)),
        ParamDomain::Int { low, high, log } => {
            if *log {
                let (a, b) = ((*low as f64).ln(), ((*high + 1) as f64).ln());
                let x = rng.gen_range(a..b.max(a + f64::EPSILON)).exp().floor() as i64;
                ParamValue::Int(x.clamp(*low, *high))
            } else {
                ParamValue::Int(rng.gen_range(*low..=*high))
            }
        }
        ParamDomain::Float { low, high, log } => {
            if low == high {
                return ParamValue::Float(*low);
            }
            let x = if *log {
                rng.gen_range(low.ln()..=high.ln()).exp()
            } else {
                rng.gen_range(*low..=*high)
            };
            ParamValue::Float(x.clamp(*low, *high))
        }
    }
}

fn mutate_value<R: Rng + ?Sized>(d: &ParamDomain, v: &ParamValue, rng: &mut R) -> ParamValue {
    let normal = |rng: &mut R| -> f64 {
        // Box-Muller; enough for a mutation step.
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    match d {
        ParamDomain::Categorical { choices } => {
            if choices.len() < 2 {
                return v.clone();
            }
            let pos = choices.iter().position(|c| c == v).unwrap_or(0);
            if ordered(choices) && rng.gen_bool(0.7) {
                let step: i64 = if rng.gen_bool(0.5) { 1 } else { -1 };
                let np = (pos as i64 + step).clamp(0, choices.len() as i64 - 1) as usize;
                let np = if np == pos {
                    (pos as i64 - step) as usize
                } else {
                    np
                };
                return choices[np].clone();
            }
            let others: Vec<&ParamValue> = choices.iter().filter(|c| *c != v).collect();
            others
                .choose(rng)
                .map(|c| (*c).clone())
                .unwrap_or_else(|| v.clone())
        }
        ParamDomain::Int { low, high, log } => {
            let Some(x) = v.as_f64() else {
                return sample_domain(d, rng);
            };
            if low == high {
                return ParamValue::Int(*low);
            }
            let (lo, hi, t) = if *log {
                ((*low as f64).ln(), (*high as f64).ln(), x.max(1.0).ln())
            } else {
                (*low as f64, *high as f64, x)
            };
            let nt = t + 0.2 * (hi - lo) * normal(rng);
            let mut nx = if *log { nt.exp() } else { nt }.round() as i64;
            nx = nx.clamp(*low, *high);
            if nx == x as i64 {
                nx = if nx < *high { nx + 1 } else { nx - 1 };
            }
            ParamValue::Int(nx)
        }
        ParamDomain::Float { low, high, log } => {
            let Some(x) = v.as_f64() else {
                return sample_domain(d, rng);
            };
            let (lo, hi, t) = if *log {
                (low.ln(), high.ln(), x.max(*low).ln())
            } else {
                (*low, *high, x)
            };
            let nt = (t + 0.2 * (hi - lo) * normal(rng)).clamp(lo, hi);
            ParamValue::Float(if *log { nt.exp() } else { nt }.clamp(*low, *high))
        }
    }
}

fn value_distance(d: &ParamDomain, x: &ParamValue, y: &ParamValue) -> f64 {
    if x == y {
        return 0.0;
    }
    match d {
        ParamDomain::Categorical { choices } => {
            if ordered(choices) && choices.len() > 1 {
                let px = choices.iter().position(|c| c == x);
                let py = choices.iter().position(|c| c == y);
                match (px, py) {
                    (Some(a), Some(b)) => (a as f64 - b as f64).abs() / (choices.len() - 1) as f64,
                    _ => 1.0,
                }
            } else {
                1.0
            }
        }
        ParamDomain::Int { low, high, log } => {
            numeric_distance(x, y, *low as f64, *high as f64, *log)
        }
        ParamDomain::Float { low, high, log } => numeric_distance(x, y, *low, *high, *log),
    }
}

fn numeric_distance(x: &ParamValue, y: &ParamValue, low: f64, high: f64, log: bool) -> f64 {
    match (x.as_f64(), y.as_f64()) {
        (Some(a), Some(b)) => {
            let (a, b, lo, hi) = if log {
                (a.max(low).ln(), b.max(low).ln(), low.ln(), high.ln())
            } else {
                (a, b, low, high)
            };
            if hi > lo {
                ((a - b) / (hi - lo)).abs().min(1.0)
            } else {
                0.0
            }
        }
        _ => 1.0,
    }
}

/// Index of configurations by key, for callers that map keys back.
pub fn index_by_key(configs: &[Config]) -> HashMap<String, usize> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| (c.key(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn default_space_parses_and_samples_valid_configs() {
        let space = SearchSpace::default_tabular();
        let names: Vec<&str> = space.params().iter().map(|p| p.name.as_str()).collect();
        for required in [
            "backbone",
            "n_layers",
            "width_1",
            "width_4",
            "activation",
            "dropout",
            "normalization",
            "learning_rate",
            "batch_size",
            "epochs",
        ] {
            assert!(names.contains(&required), "missing {required}");
        }
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let c = space.sample(&mut rng);
            space.validate(&c).unwrap();
            let n = c.get("n_layers").and_then(|v| v.as_f64()).unwrap() as usize;
            for layer in 1..=4 {
                assert_eq!(
                    c.get(&format!("width_{layer}")).is_some(),
                    layer <= n,
                    "{c}"
                );
            }
            let lr = c.get("learning_rate").and_then(|v| v.as_f64()).unwrap();
            assert!((1e-4..=1e-1).contains(&lr));
            let m = space.mutate(&c, 0.2, &mut rng);
            space.validate(&m).unwrap();
            assert_ne!(m, c);
            let d = space.sample(&mut rng);
            space.validate(&space.crossover(&c, &d, &mut rng)).unwrap();
        }
    }

    #[test]
    fn config_key_is_canonical_and_round_trips() {
        let mut a = Config::default();
        a.0.insert("z".into(), ParamValue::Int(3));
        a.0.insert("a".into(), ParamValue::Float(0.5));
        a.0.insert("m".into(), ParamValue::Str("relu".into()));
        let key = a.key();
        assert_eq!(key, r#"{"a":0.5,"m":"relu","z":3}"#);
        assert_eq!(Config::from_json(&key).unwrap(), a);
        // An integer and a float are different values.
        let mut b = a.clone();
        b.0.insert("z".into(), ParamValue::Float(3.0));
        assert_ne!(b.key(), key);
        assert_eq!(Config::from_json(&b.key()).unwrap(), b);
    }

    #[test]
    fn toml_errors_name_file_parameter_and_key() {
        let bad = "[[param]]\nname = \"lr\"\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nlog = true\n";
        let e = SearchSpace::from_toml_str(bad, "space.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("space.toml") && e.contains("lr") && e.contains("`log`"),
            "{e}"
        );
        let bad = "[[param]]\nname = \"w\"\ntype = \"int\"\nlow = 1\nhigh = 4\nwhen = { param = \"n\", in = [1] }\n";
        let e = SearchSpace::from_toml_str(bad, "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("when.param") && e.contains("`n`"), "{e}");
        let bad = "[[param]]\nname = \"w\"\ntype = \"int\"\nlow = 1\nhigh = 4\nstep = 2\n";
        let e = SearchSpace::from_toml_str(bad, "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`step`") && e.contains("unknown key"), "{e}");
        let e = SearchSpace::from_toml_str("[[param]\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("line 1"), "{e}");
        let e = SearchSpace::from_toml_file(Path::new("/nonexistent/space.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/space.toml"));
    }

    #[test]
    fn log_int_sampling_covers_range_evenly_in_log() {
        let space = SearchSpace::from_toml_str(
            "[[param]]\nname = \"w\"\ntype = \"int\"\nlow = 1\nhigh = 1000\nlog = true\n",
            "t",
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut below_32 = 0;
        for _ in 0..4000 {
            let w = space.sample(&mut rng).get("w").unwrap().as_f64().unwrap();
            assert!((1.0..=1000.0).contains(&w));
            if w < 32.0 {
                below_32 += 1;
            }
        }
        // ln(32)/ln(1001) is about half of the log range.
        assert!((1600..2400).contains(&below_32), "{below_32}");
    }

    #[test]
    fn derived_space_finds_conditions_and_projects_onto_rows() {
        let names = vec!["n".to_string(), "w1".to_string(), "w2".to_string()];
        let v = |i: i64| Some(ParamValue::Int(i));
        let rows = vec![
            vec![v(1), v(8), None],
            vec![v(1), v(16), None],
            vec![v(2), v(8), v(8)],
            vec![v(2), v(16), v(16)],
        ];
        let space = SearchSpace::derive_from_rows(&names, &rows).unwrap();
        let cond = space.params()[2].condition.as_ref().unwrap();
        assert_eq!(cond.parent, "n");
        assert_eq!(cond.rule, ConditionRule::In(vec![ParamValue::Int(2)]));
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = HashSet::new();
        for _ in 0..4 {
            let c = space.sample_unseen(&mut rng, &seen).unwrap();
            space.validate(&c).unwrap();
            assert!(seen.insert(c.key()));
        }
        assert!(space.sample_unseen(&mut rng, &seen).is_none());
        // A candidate off the table projects to the nearest unseen row.
        let mut off = Config::default();
        off.0.insert("n".into(), ParamValue::Int(2));
        off.0.insert("w1".into(), ParamValue::Int(16));
        off.0.insert("w2".into(), ParamValue::Int(8));
        let mut seen = HashSet::new();
        seen.insert(rows_config(&[("n", 2), ("w1", 16), ("w2", 16)]).key());
        let p = space.project_unseen(&off, &seen, &mut rng).unwrap();
        assert_eq!(p, rows_config(&[("n", 2), ("w1", 8), ("w2", 8)]));
    }

    #[test]
    fn projection_by_codes_finds_the_nearest_row_by_distance() {
        // Every kind of parameter the distance distinguishes: ordered and
        // unordered choices, log and linear numbers, a conditional one.
        let space = SearchSpace::from_toml_str(
            r#"
[[param]]
name = "n"
type = "categorical"
choices = [1, 2, 3]
[[param]]
name = "w2"
type = "categorical"
choices = [8, 32, 128, 512]
when = { param = "n", at_least = 2 }
[[param]]
name = "act"
type = "categorical"
choices = ["relu", "tanh", "gelu"]
[[param]]
name = "lr"
type = "float"
low = 0.0001
high = 0.1
log = true
[[param]]
name = "drop"
type = "float"
low = 0.0
high = 0.5
[[param]]
name = "units"
type = "int"
low = 1
high = 64
log = true
"#,
            "t",
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let rows: Vec<Config> = (0..300).map(|_| space.sample(&mut rng)).collect();
        let space = space.with_allowed(rows).unwrap();
        let allowed = space.allowed().unwrap().to_vec();
        let mut seen: HashSet<String> = HashSet::new();
        for round in 0..200 {
            let candidate = if round % 2 == 0 {
                space.resolve(&Config::default(), &mut rng)
            } else {
                space.mutate(&allowed[round % allowed.len()], 0.5, &mut rng)
            };
            // The coded distance to every row is the distance, exactly.
            let coders: Vec<DistanceCode> = space
                .params()
                .iter()
                .map(|p| DistanceCode::of(&p.domain))
                .collect();
            let code = |c: &Config| -> Vec<f64> {
                space
                    .params()
                    .iter()
                    .zip(&coders)
                    .map(|(p, k)| k.encode(&p.domain, c.get(&p.name)))
                    .collect()
            };
            let cand = code(&candidate);
            for row in &allowed {
                let coded: f64 = coders
                    .iter()
                    .zip(cand.iter().zip(code(row)))
                    .map(|(k, (&a, b))| k.between(a, b))
                    .sum();
                assert_eq!(
                    coded,
                    space.distance(&candidate, row),
                    "{candidate} / {row}"
                );
            }
            let unseen: Vec<usize> = (0..allowed.len())
                .filter(|&i| !seen.contains(&allowed[i].key()))
                .collect();
            let best = unseen
                .iter()
                .map(|&i| space.distance(&candidate, &allowed[i]))
                .fold(f64::INFINITY, f64::min);
            let p = space.project_unseen(&candidate, &seen, &mut rng).unwrap();
            assert!(!seen.contains(&p.key()));
            assert!(
                (space.distance(&candidate, &p) - best).abs() <= 1e-12,
                "{candidate} -> {p}"
            );
            seen.insert(p.key());
        }
    }

    fn rows_config(pairs: &[(&str, i64)]) -> Config {
        Config(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ParamValue::Int(*v)))
                .collect(),
        )
    }
}
