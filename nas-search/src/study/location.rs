//! Where a study lives: a SQLite file, or a PostgreSQL database and a study
//! name in it. Parsed once from what the user typed (`--study`), so every
//! command accepts both.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Default study name in a PostgreSQL database when the URL names none.
pub const DEFAULT_PG_STUDY: &str = "nas_study";

/// Where a study is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudyLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A study in a PostgreSQL database.
    Postgres(PgLocation),
}

/// A study in a PostgreSQL database: the connection URL the driver gets,
/// and the study's name, which is the PostgreSQL schema (namespace) holding
/// its tables, so one database holds many studies.
///
/// Invariant: `study` is a lower-case SQL identifier (`[a-z_][a-z0-9_]*`,
/// at most 63 bytes), safe to splice into SQL; `url` parses as a
/// rust-postgres configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    // Boxed: a location sits in every `StudyError`, which stays small.
    parts: Box<PgParts>,
}

#[derive(Clone, PartialEq, Eq)]
struct PgParts {
    url: String,
    study: String,
}

/// Why a `postgresql://` location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("study location {shown}: {message}")]
pub struct LocationError {
    /// The location, password hidden.
    pub shown: String,
    /// What is wrong with it.
    pub message: String,
}

impl StudyLocation {
    /// Parses what a user gave as `--study`: `postgresql://…` or
    /// `postgres://…` is a PostgreSQL study (the query parameter
    /// `study=NAME` picks the study in that database, default
    /// [`DEFAULT_PG_STUDY`]); anything else is a SQLite file path.
    pub fn parse(text: &str) -> Result<StudyLocation, LocationError> {
        if text.starts_with("postgresql://") || text.starts_with("postgres://") {
            PgLocation::parse(text).map(StudyLocation::Postgres)
        } else {
            Ok(StudyLocation::Sqlite(PathBuf::from(text)))
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_file(&self) -> Option<&Path> {
        match self {
            StudyLocation::Sqlite(p) => Some(p),
            StudyLocation::Postgres(_) => None,
        }
    }

    /// A sibling study named `name`: `DIR/NAME.db` beside a SQLite file
    /// given as a directory, `BASE_NAME` in the same PostgreSQL database.
    /// Used by commands that keep several studies (`compare`).
    pub fn child(&self, name: &str) -> StudyLocation {
        match self {
            StudyLocation::Sqlite(dir) => StudyLocation::Sqlite(dir.join(format!("{name}.db"))),
            StudyLocation::Postgres(pg) => {
                let suffix: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let mut study = format!("{}_{suffix}", pg.parts.study);
                study.truncate(63);
                StudyLocation::Postgres(PgLocation {
                    parts: Box::new(PgParts {
                        url: pg.parts.url.clone(),
                        study,
                    }),
                })
            }
        }
    }
}

impl FromStr for StudyLocation {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StudyLocation::parse(s)
    }
}

impl fmt::Display for StudyLocation {
    /// The file path, or the URL with any password hidden and the study
    /// named.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StudyLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StudyLocation::Postgres(pg) => write!(f, "{pg}"),
        }
    }
}

impl From<&Path> for StudyLocation {
    fn from(p: &Path) -> Self {
        StudyLocation::Sqlite(p.to_path_buf())
    }
}

impl From<PathBuf> for StudyLocation {
    fn from(p: PathBuf) -> Self {
        StudyLocation::Sqlite(p)
    }
}

impl From<&PathBuf> for StudyLocation {
    fn from(p: &PathBuf) -> Self {
        StudyLocation::Sqlite(p.clone())
    }
}

impl From<&StudyLocation> for StudyLocation {
    fn from(l: &StudyLocation) -> Self {
        l.clone()
    }
}

impl From<PgLocation> for StudyLocation {
    fn from(l: PgLocation) -> Self {
        StudyLocation::Postgres(l)
    }
}

impl PgLocation {
    /// Parses a `postgresql://` URL; a `study=NAME` query parameter is
    /// taken out (the driver does not know it) and names the study.
    pub fn parse(text: &str) -> Result<PgLocation, LocationError> {
        let fail = |message: String| LocationError {
            shown: redact(text),
            message,
        };
        let (base, query) = match text.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (text, None),
        };
        let mut study = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            match pair.split_once('=') {
                Some(("study", name)) => study = Some(name.to_owned()),
                _ => kept.push(pair),
            }
        }
        let study = study.unwrap_or_else(|| DEFAULT_PG_STUDY.to_owned());
        check_identifier(&study).map_err(|m| fail(format!("study name `{study}`: {m}")))?;
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        postgres::Config::from_str(&url).map_err(|e| fail(format!("not a valid URL: {e}")))?;
        Ok(PgLocation {
            parts: Box::new(PgParts { url, study }),
        })
    }

    /// A study named `study` in the database at `url` (a URL without a
    /// `study=` parameter).
    pub fn new(url: &str, study: &str) -> Result<PgLocation, LocationError> {
        let sep = if url.contains('?') { '&' } else { '?' };
        PgLocation::parse(&format!("{url}{sep}study={study}"))
    }

    /// The URL handed to the driver (may hold a password: never print it;
    /// `Display` hides it).
    pub fn url(&self) -> &str {
        &self.parts.url
    }

    /// The study's name (its PostgreSQL schema).
    pub fn study(&self) -> &str {
        &self.parts.study
    }

    /// The driver's configuration.
    pub(crate) fn config(&self) -> postgres::Config {
        // Checked in `parse`.
        postgres::Config::from_str(&self.parts.url).unwrap_or_default()
    }
}

impl fmt::Display for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.parts.url.contains('?') {
            '&'
        } else {
            '?'
        };
        write!(
            f,
            "{}{sep}study={}",
            redact(&self.parts.url),
            self.parts.study
        )
    }
}

impl fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgLocation({self})")
    }
}

fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("empty".into());
    };
    if name.len() > 63 {
        return Err("longer than 63 bytes".into());
    }
    if !(first.is_ascii_lowercase() || first == '_')
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err("use lower-case letters, digits and `_`, not starting with a digit".into());
    }
    if name.starts_with("pg_") || name == "information_schema" || name == "public" {
        return Err("reserved by PostgreSQL".into());
    }
    Ok(())
}

/// `text` with the password of `user:password@` and of a `password=`
/// parameter replaced by `***`.
fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => p.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sqlite_and_urls_postgres() {
        assert_eq!(
            StudyLocation::parse("runs/s.db").unwrap(),
            StudyLocation::Sqlite("runs/s.db".into())
        );
        let StudyLocation::Postgres(pg) =
            StudyLocation::parse("postgresql://u:secret@db:5433/nas?study=mlp_1&connect_timeout=3")
                .unwrap()
        else {
            panic!("expected postgres");
        };
        assert_eq!(pg.study(), "mlp_1");
        assert_eq!(
            pg.url(),
            "postgresql://u:secret@db:5433/nas?connect_timeout=3"
        );
        let shown = pg.to_string();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("u:***@db:5433"), "{shown}");
        assert!(shown.ends_with("study=mlp_1"), "{shown}");
        let default = PgLocation::parse("postgres://localhost/nas").unwrap();
        assert_eq!(default.study(), DEFAULT_PG_STUDY);
    }

    #[test]
    fn bad_locations_are_refused_with_the_reason_and_no_password() {
        let e = StudyLocation::parse("postgresql://u:pw@h/db?study=Bad-Name").unwrap_err();
        assert!(e.to_string().contains("study name `Bad-Name`"), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let e = StudyLocation::parse("postgresql://u:pw@h:notaport/db").unwrap_err();
        assert!(e.to_string().contains("not a valid URL"), "{e}");
        assert!(!e.to_string().contains(":pw"), "{e}");
        let e = StudyLocation::parse("postgresql://h/db?study=pg_x").unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = StudyLocation::parse("postgresql://h/db?password=hunter2&bogus=1").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn children_of_a_location() {
        let dir = StudyLocation::parse("cmp").unwrap();
        assert_eq!(
            dir.child("energy-aware"),
            StudyLocation::Sqlite("cmp/energy-aware.db".into())
        );
        let pg = StudyLocation::parse("postgresql://h/db?study=cmp").unwrap();
        let StudyLocation::Postgres(c) = pg.child("energy-aware") else {
            panic!("expected postgres");
        };
        assert_eq!(c.study(), "cmp_energy_aware");
    }
}
