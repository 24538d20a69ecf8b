//! How client commands print: aligned tables for people, JSON for scripts.

use serde::Serialize;

/// The `--output` choice shared by every client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables and lines.
    #[value(alias = "text")]
    Table,
    /// JSON: one document for listings, one object per line for streams.
    Json,
}

/// Prints rows as a table whose columns are as wide as their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let width = widths.get(i).copied().unwrap_or(0);
            out.push_str(&format!("{cell:<width$}"));
        }
        println!("{}", out.trim_end());
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// Prints one JSON document (pretty) or one JSON line (streams).
pub fn print_json<T: Serialize>(value: &T, one_line: bool) -> Result<(), serde_json::Error> {
    let text = if one_line {
        serde_json::to_string(value)?
    } else {
        serde_json::to_string_pretty(value)?
    };
    println!("{text}");
    Ok(())
}
