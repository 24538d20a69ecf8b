//! What `herald peer bench` reports: the report's fields (its JSON form) and the table.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::slices::{SlicePair, TlsSlicePair};

#[derive(Debug, Serialize)]
pub(super) struct Latency {
    pub(super) p50_us: u64,
    pub(super) p99_us: u64,
    pub(super) p999_us: u64,
    pub(super) max_us: u64,
    pub(super) samples: u64,
}

impl Latency {
    pub(super) fn from(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            samples: h.len(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) payload_bytes: usize,
    pub(super) bare_tcp_round_trip: Latency,
    pub(super) bare_udp_round_trip: Latency,
    pub(super) direct_rate_per_s: u64,
    pub(super) direct_publish_to_ack: Latency,
    pub(super) direct_scheduled_to_ack: Latency,
    pub(super) direct_failed: u64,
    pub(super) direct_p50_ratio_to_tcp: f64,
    pub(super) direct_p99_ratio_to_tcp: f64,
    /// The bare TCP echo paced and threaded like the direct phase (see `bare_tcp_open_loop`).
    pub(super) bare_tcp_open_loop: Latency,
    pub(super) bare_tcp_open_loop_scheduled: Latency,
    /// Direct over that baseline, each measured from the call (p50, p99).
    pub(super) direct_p50_ratio_to_tcp_open_loop: f64,
    pub(super) direct_p99_ratio_to_tcp_open_loop: f64,
    /// Direct over that baseline, each measured from the scheduled time (p50, p99).
    pub(super) direct_scheduled_p50_ratio_to_tcp_open_loop: f64,
    pub(super) direct_scheduled_p99_ratio_to_tcp_open_loop: f64,
    /// The echo and direct latency phases alternate in this many slices each, of
    /// `latency_slice_events` events at `direct_rate_per_s`.
    pub(super) latency_slices_per_phase: u64,
    pub(super) latency_slice_events: u64,
    /// The median over slice pairs of direct's p50 (p99) over the echo's in the same pair, each
    /// from the call: a view less moved by a slow moment in one slice.
    pub(super) direct_p50_ratio_to_tcp_open_loop_slice_median: f64,
    pub(super) direct_p99_ratio_to_tcp_open_loop_slice_median: f64,
    /// Each pair's p50 and p99 from the call, in the order they ran.
    pub(super) latency_slice_pairs: Vec<SlicePair>,
    pub(super) direct_pipelined_acked_per_s: u64,
    pub(super) direct_pipelined_in_flight: usize,
    pub(super) datagram_sent_per_s: u64,
    pub(super) datagram_blast_delivered_pct: f64,
    /// The same number sent with `send_datagrams` in batches of `DATAGRAM_BATCH_MAX`.
    pub(super) datagram_batched_sent_per_s: u64,
    pub(super) datagram_batched_delivered_pct: f64,
    pub(super) datagram_paced_rate_per_s: u64,
    pub(super) datagram_paced_sent: u64,
    pub(super) datagram_paced_delivered_pct: f64,
    pub(super) datagram_paced_lost_counted: u64,
    /// Direct publish-to-ack in plain TCP, in slices alternating with the TLS ones (from the
    /// call, at `direct_rate_per_s`).
    pub(super) direct_tls_plain_publish_to_ack: Latency,
    /// Direct publish-to-ack over TLS (certificates on both sides), in those slices.
    pub(super) direct_tls_publish_to_ack: Latency,
    pub(super) direct_tls_failed: u64,
    /// TLS over plain (p50, p99), and the median over slice pairs of the p50 ratio.
    pub(super) direct_tls_p50_ratio_to_plain: f64,
    pub(super) direct_tls_p99_ratio_to_plain: f64,
    pub(super) direct_tls_p50_ratio_to_plain_slice_median: f64,
    pub(super) direct_tls_slice_pairs: Vec<TlsSlicePair>,
}
pub(super) fn print_table(r: &Report) {
    let lat = |l: &Latency| {
        format!(
            "p50 {} µs, p99 {} µs, p99.9 {} µs",
            l.p50_us, l.p99_us, l.p999_us
        )
    };
    let rows = vec![
        vec![
            format!("bare TCP ping-pong {} B", r.payload_bytes),
            lat(&r.bare_tcp_round_trip),
            "limit".to_string(),
        ],
        vec![
            format!("bare UDP ping-pong {} B", r.payload_bytes),
            lat(&r.bare_udp_round_trip),
            "limit".to_string(),
        ],
        vec![
            format!("bare TCP echo at {}/s, bench runtimes", r.direct_rate_per_s),
            lat(&r.bare_tcp_open_loop),
            "limit, same threading".to_string(),
        ],
        vec![
            "  same, from the scheduled time".to_string(),
            lat(&r.bare_tcp_open_loop_scheduled),
            String::new(),
        ],
        vec![
            format!("direct publish-to-ack at {}/s", r.direct_rate_per_s),
            format!(
                "{} ({} failed)",
                lat(&r.direct_publish_to_ack),
                r.direct_failed
            ),
            format!(
                "p50 {:.2}x, p99 {:.2}x ping-pong; {:.2}x, {:.2}x echo",
                r.direct_p50_ratio_to_tcp,
                r.direct_p99_ratio_to_tcp,
                r.direct_p50_ratio_to_tcp_open_loop,
                r.direct_p99_ratio_to_tcp_open_loop
            ),
        ],
        vec![
            "  same, from the scheduled time".to_string(),
            lat(&r.direct_scheduled_to_ack),
            format!(
                "p50 {:.2}x, p99 {:.2}x echo",
                r.direct_scheduled_p50_ratio_to_tcp_open_loop,
                r.direct_scheduled_p99_ratio_to_tcp_open_loop
            ),
        ],
        vec![
            format!(
                "  per slice pair ({} x 2 slices of {} events)",
                r.latency_slices_per_phase, r.latency_slice_events
            ),
            String::new(),
            format!(
                "median p50 {:.2}x, p99 {:.2}x echo",
                r.direct_p50_ratio_to_tcp_open_loop_slice_median,
                r.direct_p99_ratio_to_tcp_open_loop_slice_median
            ),
        ],
        vec![
            format!("direct publish-to-ack at {}/s, plain", r.direct_rate_per_s),
            lat(&r.direct_tls_plain_publish_to_ack),
            "alternating with TLS".to_string(),
        ],
        vec![
            format!("direct publish-to-ack at {}/s, TLS", r.direct_rate_per_s),
            format!(
                "{} ({} failed)",
                lat(&r.direct_tls_publish_to_ack),
                r.direct_tls_failed
            ),
            format!(
                "p50 {:.2}x, p99 {:.2}x plain; slice median p50 {:.2}x",
                r.direct_tls_p50_ratio_to_plain,
                r.direct_tls_p99_ratio_to_plain,
                r.direct_tls_p50_ratio_to_plain_slice_median
            ),
        ],
        vec![
            format!(
                "direct pipelined ({} in flight)",
                r.direct_pipelined_in_flight
            ),
            format!("{} events/s acked", r.direct_pipelined_acked_per_s),
            String::new(),
        ],
        vec![
            "datagram send, as fast as possible".to_string(),
            format!(
                "{} events/s sent ({:.1}% received)",
                r.datagram_sent_per_s, r.datagram_blast_delivered_pct
            ),
            String::new(),
        ],
        vec![
            format!(
                "datagram send, batches of {} (sendmmsg)",
                herald_direct::DATAGRAM_BATCH_MAX
            ),
            format!(
                "{} events/s sent ({:.1}% received)",
                r.datagram_batched_sent_per_s, r.datagram_batched_delivered_pct
            ),
            String::new(),
        ],
        vec![
            format!("datagram at {}/s", r.datagram_paced_rate_per_s),
            format!(
                "{:.2}% delivered of {} ({} counted lost)",
                r.datagram_paced_delivered_pct,
                r.datagram_paced_sent,
                r.datagram_paced_lost_counted
            ),
            String::new(),
        ],
    ];
    crate::output::print_table(&["measurement", "result", "vs. limit"], &rows);
}
