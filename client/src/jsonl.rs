//! Bulk index entries as JSON lines: `{"key":..,"tags":[..],"size":..}`.

use purgecast_proto::api::Entry;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    #[error("line {line}: empty key")]
    EmptyKey { line: usize },
}

/// One line. Unknown fields are rejected so that a typo ("tag" for "tags")
/// fails loudly instead of silently storing untagged entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    expires_at_ms: u64,
}

/// Parses every non-blank line; `default_expires_at_ms` applies to lines
/// without their own expiry (0 = never).
pub fn parse_entries(text: &str, default_expires_at_ms: u64) -> Result<Vec<Entry>, JsonlError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(raw).map_err(|e| json_error(line, &e))?;
        if parsed.key.trim().is_empty() {
            return Err(JsonlError::EmptyKey { line });
        }
        let expires_at_ms = if parsed.expires_at_ms != 0 { parsed.expires_at_ms } else { default_expires_at_ms };
        out.push(Entry { key: parsed.key, tags: parsed.tags, size: parsed.size, expires_at_ms, ..Entry::default() });
    }
    Ok(out)
}

/// serde_json counts lines within the one-line document ("at line 1
/// column 34"); report the file's line instead.
fn json_error(line: usize, e: &serde_json::Error) -> JsonlError {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    JsonlError::Json { line, column: e.column(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_skips_blanks() {
        let text = r#"{"key":"https://a.example/x","tags":["t1","t2"],"size":12}

{"key":"https://a.example/y"}
{"key":"https://a.example/z","expires_at_ms":5}
"#;
        let entries = parse_entries(text, 99).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].key, "https://a.example/x");
        assert_eq!(entries[0].tags, ["t1", "t2"]);
        assert_eq!(entries[0].size, 12);
        assert_eq!(entries[0].expires_at_ms, 99);
        assert!(entries[1].tags.is_empty());
        assert_eq!(entries[1].size, 0);
        assert_eq!(entries[2].expires_at_ms, 5);
    }

    #[test]
    fn errors_name_the_line() {
        let err =
            parse_entries("{\"key\":\"https://a/x\"}\n{\"key\":\"https://a/y\",\"tag\":[\"t\"]}\n", 0).unwrap_err();
        assert!(matches!(err, JsonlError::Json { line: 2, .. }), "{err}");
        assert!(err.to_string().starts_with("line 2, column 26: unknown field `tag`, expected one of"), "{err}");
        assert!(!err.to_string().contains("line 1"), "{err}");
        let err = parse_entries("not json", 0).unwrap_err();
        assert!(matches!(err, JsonlError::Json { line: 1, .. }));
        let err = parse_entries("\n{\"tags\":[]}", 0).unwrap_err();
        assert!(matches!(err, JsonlError::Json { line: 2, .. }));
        let err = parse_entries("{\"key\":\" \"}", 0).unwrap_err();
        assert!(matches!(err, JsonlError::EmptyKey { line: 1 }));
    }
}
