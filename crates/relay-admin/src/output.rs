//! How results are shown: aligned text for people, JSON for scripts. Every cell and line goes
//! through `relay_config::printable` and JSON through `relay_config::json_printable`, so a
//! writer-chosen key, topic or error cannot drive the operator's terminal.
use relay_config::{json_printable, printable};
use serde::Serialize;

use crate::cli::Format;

/// A result of one command: JSON, or a text table with lines around it.
pub(crate) struct Shown<T: Serialize> {
    pub json: T,
    pub table: Option<Table>,
    pub lines: Vec<String>,
}

impl<T: Serialize> Shown<T> {
    pub fn print(&self, format: Format) {
        match format {
            Format::Json => {
                let text = serde_json::to_string_pretty(&self.json)
                    .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
                println!("{}", json_printable(text));
            }
            Format::Table => {
                if let Some(table) = &self.table {
                    print!("{}", table.render());
                }
                for line in &self.lines {
                    println!("{}", printable(line));
                }
            }
        }
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub(crate) struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as text, every cell escaped by `relay_config::printable`; empty without rows.
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|cell| printable(cell).into_owned()).collect())
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut out = line(&mut self.headers.iter().copied());
        for row in &rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

/// Bytes as text when they are printable UTF-8, otherwise as hex (`0x…`).
pub(crate) fn bytes_text(bytes: Option<&[u8]>) -> Option<String> {
    let bytes = bytes?;
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => Some(text.to_string()),
        _ => Some(format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())),
    }
}

/// `a, b, c`, or `-` for none.
pub(crate) fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// "showing N of M" when a list was cut by --limit.
pub(crate) fn count_line(what: &str, shown: usize, total: i64) -> String {
    if (shown as i64) < total {
        format!("{total} {what} (showing the first {shown}; raise --limit for more)")
    } else {
        format!("{total} {what}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_shows_binary_keys_as_hex() {
        let table = Table {
            headers: vec!["ID", "KEY"],
            rows: vec![vec!["7".into(), "acct-1".into()], vec!["12345".into(), "k".into()]],
        };
        assert_eq!(table.render(), "ID     KEY\n7      acct-1\n12345  k\n");
        assert_eq!(bytes_text(Some(b"acct-1")).as_deref(), Some("acct-1"));
        assert_eq!(bytes_text(Some(b"\xde\x00")).as_deref(), Some("0xde00"));
        assert_eq!(bytes_text(None), None);
        let hostile = Table { headers: vec!["KEY"], rows: vec![vec!["k\x1b[2J\u{202e}".into()]] };
        assert_eq!(hostile.render(), "KEY\nk\\x1b[2J\\u{202e}\n");
        assert_eq!(
            count_line("parked rows", 2, 5),
            "5 parked rows (showing the first 2; raise --limit for more)"
        );
    }
}
