//! Reading a delimited text file (CSV or TSV, gzipped or not) into a table
//! of trimmed string cells, keeping each row's line number for errors.
//!
//! The reader copes with files as people have them: a header row, spaces
//! after the delimiter (`39, State-gov, 77516`), quoted fields, blank lines.
//! It does not interpret values; [`super::prepare`] does.

use super::DataError;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::Path;

/// A delimited file read into memory.
///
/// Invariant: every row has exactly `header.len()` cells (ragged rows are an
/// error at read time), and `lines[i]` is the 1-based line of `rows[i]`.
#[derive(Debug, Clone)]
pub struct RawTable {
    /// Where the table came from, for error messages.
    pub source: String,
    /// Column names, trimmed.
    pub header: Vec<String>,
    /// Cells, trimmed, row-major.
    pub rows: Vec<Vec<String>>,
    /// 1-based line number of each row in the (decompressed) file.
    pub lines: Vec<u64>,
}

impl RawTable {
    /// Index of the column named `name` (exact match, then case-insensitive).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name).or_else(|| {
            self.header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
        })
    }
}

/// Reads a CSV or TSV file, gzipped or not (detected from the content, not
/// the name).
pub fn read_table(path: &Path) -> Result<RawTable, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_table_bytes(&path.display().to_string(), &bytes)
}

/// Reads a table from the bytes of a file (gzipped or not); `source` names
/// it in errors.
pub fn read_table_bytes(source: &str, bytes: &[u8]) -> Result<RawTable, DataError> {
    let text_bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|source_err| DataError::Io {
                path: source.to_owned(),
                source: source_err,
            })?;
        out
    } else {
        bytes.to_vec()
    };
    let first_line = text_bytes
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .ok_or_else(|| DataError::Empty {
            path: source.to_owned(),
            what: "no header row".into(),
        })?;
    let delimiter = detect_delimiter(first_line);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text_bytes.as_slice());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(source, &e))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(DataError::Empty {
            path: source.to_owned(),
            what: "an empty header row".into(),
        });
    }
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    let mut record = csv::StringRecord::new();
    // The csv crate does not count blank lines in its line numbers, so lines
    // are counted here from byte offsets (incrementally: rows come in order).
    let mut line_counter = LineCounter::default();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(source, &e)),
        }
        let line = record
            .position()
            .map_or(0, |p| line_counter.line_at(&text_bytes, p.byte() as usize));
        // A line of only delimiters/spaces at the end of a file is a blank line.
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != header.len() {
            return Err(DataError::Ragged {
                path: source.to_owned(),
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        rows.push(record.iter().map(str::to_owned).collect());
        lines.push(line);
    }
    if rows.is_empty() {
        return Err(DataError::Empty {
            path: source.to_owned(),
            what: "a header but no data rows".into(),
        });
    }
    Ok(RawTable {
        source: source.to_owned(),
        header,
        rows,
        lines,
    })
}

/// 1-based line of a byte offset, counting forward from the last query.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    fn line_at(&mut self, text: &[u8], offset: usize) -> u64 {
        // A record's offset may point at the blank lines the parser skipped
        // before it; its line is the first non-blank one.
        let mut offset = offset.min(text.len());
        while offset < text.len() && matches!(text[offset], b'\n' | b'\r') {
            offset += 1;
        }
        if offset < self.offset {
            *self = LineCounter::default();
        }
        self.newlines += text[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        self.offset = offset;
        self.newlines + 1
    }
}

/// Tab if the header has one, else comma, else semicolon, else comma.
fn detect_delimiter(first_line: &[u8]) -> u8 {
    for d in [b'\t', b',', b';'] {
        if first_line.contains(&d) {
            return d;
        }
    }
    b','
}

fn csv_error(source: &str, e: &csv::Error) -> DataError {
    // Best effort: the parser's own line count (which skips blank lines).
    let line = e.position().map_or(0, |p| p.line());
    DataError::Parse {
        path: source.to_owned(),
        line,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spaces_after_commas_and_gzip() {
        let text = b"a, b, c\n1, x, 2.5\n\n3, y , ?\n";
        let t = read_table_bytes("mem", text).expect("reads");
        assert_eq!(t.header, ["a", "b", "c"]);
        assert_eq!(t.rows[1], ["3", "y", "?"]);
        assert_eq!(t.lines, [2, 4]);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"p\tq\n1\t2\n").expect("writes");
        let t = read_table_bytes("mem.gz", &gz.finish().expect("finishes")).expect("reads");
        assert_eq!(t.header, ["p", "q"]);
        assert_eq!(t.rows, [["1", "2"]]);
    }

    #[test]
    fn ragged_row_names_the_line() {
        let err = read_table_bytes("f.csv", b"a,b\n1,2\n3\n").expect_err("ragged");
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                DataError::Ragged {
                    line: 3,
                    expected: 2,
                    found: 1,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("f.csv") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn empty_inputs_are_errors() {
        for text in [&b""[..], b"\n\n", b"a,b\n"] {
            let err = read_table_bytes("e.csv", text).expect_err("empty");
            assert!(matches!(err, DataError::Empty { .. }), "{err}");
            assert!(err.to_string().contains("e.csv"));
        }
    }
}
