//! Parsing JSONL and CSV manifests of `file`, `label` pairs, and the text
//! and JSONL reading that captioned datasets share with them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::folder::{file_stamp, FileStamp};
use crate::labelled::{numeric_names, MAX_CLASSES};
use crate::DataError;

/// A manifest resolved against the file system.
pub(crate) struct Parsed {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) stamps: Vec<FileStamp>,
    pub(crate) labels: Vec<usize>,
    pub(crate) class_names: Vec<String>,
}

/// A label as written, before the class table is known.
#[derive(Clone, Debug)]
enum RawLabel {
    Int(u64),
    Name(String),
}

struct Row {
    line: usize,
    file: String,
    label: RawLabel,
}

pub(crate) fn read_manifest(path: &Path) -> Result<Parsed, DataError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let csv = match ext.as_deref() {
        Some("jsonl") => false,
        Some("csv") => true,
        _ => {
            return Err(DataError::Dataset {
                path: path.to_path_buf(),
                reason: "a manifest must be a .jsonl or .csv file".into(),
            })
        }
    };
    let text = read_text(path)?;
    let bad_line = |line: usize, reason: String| line_error(path, line, reason);
    let rows = if csv {
        parse_csv(&text).map_err(|(line, reason)| bad_line(line, reason))?
    } else {
        parse_jsonl(&text).map_err(|(line, reason)| bad_line(line, reason))?
    };
    if rows.is_empty() {
        return Err(DataError::Dataset {
            path: path.to_path_buf(),
            reason: "the manifest lists no images".into(),
        });
    }

    let base = path.parent().unwrap_or(Path::new(""));
    let mut paths = Vec::with_capacity(rows.len());
    let mut stamps = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.file.is_empty() {
            return Err(bad_line(row.line, "empty file name".into()));
        }
        let file = Path::new(&row.file);
        let full = if file.is_absolute() {
            file.to_path_buf()
        } else {
            base.join(file)
        };
        stamps.push(stat_listed_file(&full).map_err(|reason| bad_line(row.line, reason))?);
        paths.push(full);
    }

    let (labels, class_names) = class_table(&rows, csv).map_err(|(l, r)| bad_line(l, r))?;
    Ok(Parsed {
        paths,
        stamps,
        labels,
        class_names,
    })
}

/// Reads a small text file of a dataset (manifest, `classes.txt`, caption)
/// as UTF-8, without the byte-order mark Windows editors like to add.
///
/// # Errors
/// [`DataError::Io`] if it cannot be read, [`DataError::Dataset`] if it is
/// not valid UTF-8; both name the file.
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| DataError::Dataset {
        path: path.to_path_buf(),
        reason: "is not valid UTF-8".into(),
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The error of line `line` of the list file `path`, kept on one line
/// (decoder and JSON messages sometimes span several).
pub(crate) fn line_error(path: &Path, line: usize, reason: String) -> DataError {
    DataError::Manifest {
        path: path.to_path_buf(),
        line,
        reason: reason.replace(['\n', '\r'], " "),
    }
}

/// The stamp of a file a list names, or why it cannot be used: a listed
/// image that is missing is a mistake in the list, caught at start-up
/// rather than skipped silently for the whole run.
pub(crate) fn stat_listed_file(full: &Path) -> Result<FileStamp, String> {
    match fs::metadata(full) {
        Ok(meta) if meta.is_file() => Ok(file_stamp(&meta)),
        Ok(_) => Err(format!("{} is not a file", full.display())),
        Err(e) => Err(format!(
            "image file {} does not exist or cannot be read ({e})",
            full.display()
        )),
    }
}

/// The non-blank lines of a JSONL text parsed as `T`, each with its
/// one-based line number; `shape` describes the expected object in the
/// error for a line that does not parse.
pub(crate) fn parse_jsonl_lines<T: DeserializeOwned>(
    text: &str,
    shape: &str,
) -> Result<Vec<(usize, T)>, (usize, String)> {
    let mut parsed = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(raw)
            .map_err(|e| (line, format!("not a {shape} JSON object: {e}")))?;
        parsed.push((line, value));
    }
    Ok(parsed)
}

/// Turns the raw labels into class indices and names.
///
/// JSONL labels are typed: all integers or all strings, never mixed. CSV
/// labels are text: integers only if every one of them is all digits.
fn class_table(rows: &[Row], csv: bool) -> Result<(Vec<usize>, Vec<String>), (usize, String)> {
    let integers = if csv {
        rows.iter().all(|r| match &r.label {
            RawLabel::Name(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
            RawLabel::Int(_) => true,
        })
    } else {
        let first_is_int = matches!(rows[0].label, RawLabel::Int(_));
        if let Some(other) = rows
            .iter()
            .find(|r| matches!(r.label, RawLabel::Int(_)) != first_is_int)
        {
            let kind = |int: bool| if int { "an integer" } else { "a class name" };
            return Err((
                other.line,
                format!(
                    "label is {} but line {}'s label is {}; use one kind for every label",
                    kind(!first_is_int),
                    rows[0].line,
                    kind(first_is_int)
                ),
            ));
        }
        first_is_int
    };

    if integers {
        let mut labels = Vec::with_capacity(rows.len());
        for row in rows {
            let value = match &row.label {
                RawLabel::Int(v) => *v,
                RawLabel::Name(s) => s
                    .parse::<u64>()
                    .map_err(|_| (row.line, format!("label {s} is too large")))?,
            };
            if value >= MAX_CLASSES as u64 {
                return Err((
                    row.line,
                    format!(
                        "label {value} is too large (integer labels go up to {})",
                        MAX_CLASSES - 1
                    ),
                ));
            }
            labels.push(value as usize);
        }
        let max = labels.iter().copied().max().unwrap_or(0);
        return Ok((labels, numeric_names(max)));
    }

    let name_of = |row: &Row| -> Result<String, (usize, String)> {
        match &row.label {
            RawLabel::Name(s) if s.is_empty() => Err((row.line, "empty label".into())),
            RawLabel::Name(s) => Ok(s.clone()),
            RawLabel::Int(v) => Ok(v.to_string()),
        }
    };
    let names: BTreeSet<String> = rows.iter().map(name_of).collect::<Result<_, _>>()?;
    let names: Vec<String> = names.into_iter().collect();
    let labels = rows
        .iter()
        .map(|row| {
            let name = name_of(row)?;
            Ok(names
                .binary_search(&name)
                .expect("every name is in the table"))
        })
        .collect::<Result<_, _>>()?;
    Ok((labels, names))
}

fn parse_jsonl(text: &str) -> Result<Vec<Row>, (usize, String)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        file: String,
        label: serde_json::Value,
    }
    let mut rows = Vec::new();
    for (line, entry) in parse_jsonl_lines::<Entry>(text, "{\"file\": …, \"label\": …}")? {
        let label = match entry.label {
            serde_json::Value::String(s) => RawLabel::Name(s),
            serde_json::Value::Number(n) if n.as_u64().is_some() => {
                RawLabel::Int(n.as_u64().expect("checked"))
            }
            other => {
                return Err((
                    line,
                    format!("label {other} is neither a class name nor a non-negative integer"),
                ))
            }
        };
        rows.push(Row {
            line,
            file: entry.file,
            label,
        });
    }
    Ok(rows)
}

fn parse_csv(text: &str) -> Result<Vec<Row>, (usize, String)> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(k, l)| (k + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header = split_csv_line(header).map_err(|e| (header_line, e))?;
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(file_col), Some(label_col)) = (column("file"), column("label")) else {
        return Err((
            header_line,
            format!(
                "the header must name a \"file\" and a \"label\" column (found: {})",
                header.join(", ")
            ),
        ));
    };
    let mut rows = Vec::new();
    for (line, raw) in lines {
        let mut fields = split_csv_line(raw).map_err(|e| (line, e))?;
        if fields.len() != header.len() {
            return Err((
                line,
                format!(
                    "{} fields, but the header has {} columns",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        let label = std::mem::take(&mut fields[label_col]);
        rows.push(Row {
            line,
            file: std::mem::take(&mut fields[file_col]),
            label: RawLabel::Name(label),
        });
    }
    Ok(rows)
}

/// Splits one CSV line: comma-separated; a field may be double-quoted (then
/// commas are literal and `""` is a quote); unquoted fields are trimmed.
/// Quoted fields spanning lines are not supported.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err("unterminated quoted field (fields spanning lines are not \
                                    supported)"
                            .into())
                    }
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected '{c}' after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_split_with_quotes() {
        assert_eq!(split_csv_line("a,b").unwrap(), ["a", "b"]);
        assert_eq!(split_csv_line(" a , b ").unwrap(), ["a", "b"]);
        assert_eq!(
            split_csv_line("\"x, y.png\",\"say \"\"hi\"\"\"").unwrap(),
            ["x, y.png", "say \"hi\""]
        );
        assert_eq!(split_csv_line("a,").unwrap(), ["a", ""]);
        assert_eq!(split_csv_line("").unwrap(), [""]);
        assert!(split_csv_line("\"open").is_err());
        assert!(split_csv_line("\"a\"b,c").is_err());
    }
}
