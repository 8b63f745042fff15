//! Text tables and JSON printing shared by the commands.

use purgecast_client::api::Entry;
use serde::Serialize;

/// Prints `value` as one line of JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Left-aligned columns separated by two spaces; the last column is not
/// padded so lines carry no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// "a, b, c", or "-" for none.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

/// An index entry as printed with --json.
#[derive(Serialize)]
pub struct EntryView {
    key: String,
    host: String,
    path: String,
    tags: Vec<String>,
    size: u64,
    stored_at_ms: u64,
    expires_at_ms: u64,
    stale: bool,
    stale_since_ms: u64,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        EntryView {
            key: e.key,
            host: e.host,
            path: e.path,
            tags: e.tags,
            size: e.size,
            stored_at_ms: e.stored_at_ms,
            expires_at_ms: e.expires_at_ms,
            stale: e.stale,
            stale_since_ms: e.stale_since_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["node-a".to_string(), "1".to_string(), "x".to_string()],
            vec!["b".into(), "22".into(), "".into()],
        ];
        let t = table(&["NAME", "ID", "NOTE"], &rows);
        assert_eq!(t, "NAME    ID  NOTE\nnode-a  1   x\nb       22\n");
    }

    #[test]
    fn list_joins_or_dashes() {
        assert_eq!(list(&[]), "-");
        assert_eq!(list(&["a".into(), "b".into()]), "a, b");
    }
}
