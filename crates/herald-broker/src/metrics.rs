//! Prometheus text exposition of the broker's statistics, served by [`crate::http`] on `/metrics`.
//!
//! The format is the plain text one (version 0.0.4) every Prometheus-compatible scraper reads;
//! it is written by hand because it is a few lines of escaping rather than a dependency.

use std::fmt::Write as _;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family, as declared on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Builds one exposition: call [`Exposition::family`] once per metric, then add its samples.
///
/// ```
/// use herald_broker::metrics::{Exposition, Kind};
/// let mut text = Exposition::default();
/// text.family("herald_topics", "Topics on this broker.", Kind::Gauge);
/// text.sample("herald_topics", &[], 3);
/// assert!(text.finish().contains("herald_topics 3\n"));
/// ```
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family with its help text and kind.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// Adds one sample of the family `name` with the given labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The resident set size of this process in bytes, from `/proc/self/status` (Linux only;
/// `None` elsewhere or when it cannot be read).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut text = Exposition::default();
        text.family("m", "help with \\ and\nnewline", Kind::Counter);
        text.sample("m", &[("topic", "a\"b\\c\nd"), ("partition", "0")], 5);
        assert_eq!(
            text.finish(),
            "# HELP m help with \\\\ and\\nnewline\n# TYPE m counter\n\
             m{topic=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 5\n"
        );
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = process_rss_bytes().unwrap();
            // A running test binary has at least a page resident and far less than a terabyte.
            assert!((4096..(1 << 40)).contains(&rss), "{rss}");
        }
    }
}
