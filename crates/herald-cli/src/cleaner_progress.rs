//! The log cleaner's progress per partition, read from a Herald broker's `/metrics` (Kafka has
//! no request that reports it), for `herald topic describe --metrics-url`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::CliError;

/// Longest the metrics request may take to connect, and to answer.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/metrics` answer read.
const METRICS_BYTES_MAX: u64 = 64 << 20;

/// One partition's cleaner progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Bytes of closed segments not yet through a cleaner pass.
    pub dirty_bytes: u64,
    /// Bytes of closed segments the cleaner may clean.
    pub cleanable_bytes: u64,
    /// Every record below this offset has been through a cleaner pass.
    pub cleaned_to_offset: u64,
}

/// The cleaner progress of every partition of `topic` the broker at `url` compacts.
pub fn read(url: &str, topic: &str) -> Result<BTreeMap<i32, Progress>, CliError> {
    let body = http_get(url)?;
    Ok(parse(&body, topic))
}

/// Reads the `herald_cleaner_*` gauges of `topic` from a Prometheus text exposition.
pub fn parse(text: &str, topic: &str) -> BTreeMap<i32, Progress> {
    let mut out: BTreeMap<i32, Progress> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let field: fn(&mut Progress) -> &mut u64 = match name {
            "herald_cleaner_dirty_bytes" => |p| &mut p.dirty_bytes,
            "herald_cleaner_cleanable_bytes" => |p| &mut p.cleanable_bytes,
            "herald_cleaner_cleaned_to_offset" => |p| &mut p.cleaned_to_offset,
            _ => continue,
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        // Topic names hold only [a-zA-Z0-9._-], so the labels need no unescaping.
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_string())
            })
        };
        if label("topic").as_deref() != Some(topic) {
            continue;
        }
        let (Some(partition), Ok(value)) = (
            label("partition").and_then(|p| p.parse::<i32>().ok()),
            value.trim().parse::<u64>(),
        ) else {
            continue;
        };
        *field(out.entry(partition).or_default()) = value;
    }
    out
}

/// The body of a plain `http://host:port/path` GET answered 200 (HTTP/1.0, so the answer is
/// neither chunked nor kept alive).
fn http_get(url: &str) -> Result<String, CliError> {
    let bad_url = || {
        CliError::Usage(format!(
            "--metrics-url {url}: expected http://HOST:PORT/PATH"
        ))
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad_url)?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let unreachable = |e: std::io::Error| CliError::Unreachable(format!("{url}: {e}"));
    let addr = host_port
        .to_socket_addrs()
        .map_err(|_| bad_url())?
        .next()
        .ok_or_else(bad_url)?;
    let mut stream = TcpStream::connect_timeout(&addr, METRICS_TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(METRICS_TIMEOUT))
        .map_err(unreachable)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host_port}\r\nAccept: text/plain\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut answer = Vec::new();
    stream
        .take(METRICS_BYTES_MAX)
        .read_to_end(&mut answer)
        .map_err(unreachable)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| CliError::Unreachable(format!("{url}: not an HTTP answer")))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(CliError::Refused(format!(
            "{url} answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gauges_of_one_topic() {
        let text = "\
# TYPE herald_cleaner_dirty_bytes gauge
herald_cleaner_dirty_bytes{topic=\"t\",partition=\"0\"} 10
herald_cleaner_dirty_bytes{topic=\"t\",partition=\"1\"} 0
herald_cleaner_dirty_bytes{topic=\"other\",partition=\"0\"} 99
herald_cleaner_cleanable_bytes{topic=\"t\",partition=\"0\"} 40
herald_cleaner_cleaned_to_offset{topic=\"t\",partition=\"0\"} 1234
herald_produced_bytes_total 5
";
        let progress = parse(text, "t");
        assert_eq!(progress.len(), 2);
        assert_eq!(
            progress[&0],
            Progress {
                dirty_bytes: 10,
                cleanable_bytes: 40,
                cleaned_to_offset: 1234
            }
        );
        assert_eq!(progress[&1].dirty_bytes, 0);
    }
}
