//! The priority matrix: each way of delivery scored from 0 to 1 on each criterion from a
//! matrix run's figures, and ranked by the user's weights (0 to 5 each). Scores are computed
//! here once; `herald advise` prints the ranking and the HTML report re-ranks them in the
//! browser with the same weighted sum, so both always agree.

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::matrix::{Cell, Matrix, Row};

/// Highest weight of a criterion.
pub const WEIGHT_MAX: u8 = 5;

/// The criteria, in the order weights are given and shown.
pub const CRITERIA: [&str; 6] = [
    "latency",
    "throughput",
    "durability",
    "footprint",
    "independence",
    "confirmation",
];

/// What each criterion rewards, for help texts and the report.
pub const CRITERIA_HELP: [&str; 6] = [
    "low p99 latency at a common offered rate",
    "the most events per second it sustained",
    "nothing lost when the consumer is down or the producer crashes",
    "little CPU per event and little memory in the processes it needs",
    "no broker to run",
    "the producer learns that a consumer handled the event",
];

/// A weight from 0 to [`WEIGHT_MAX`] per criterion, in the order of [`CRITERIA`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priorities(pub [u8; 6]);

impl Priorities {
    /// Every criterion weighted 3.
    pub fn balanced() -> Priorities {
        Priorities([3; 6])
    }

    /// Checks each weight is in range and that one at least is above 0.
    pub fn new(weights: [u8; 6]) -> Result<Priorities, BenchError> {
        for (name, &w) in CRITERIA.iter().zip(&weights) {
            if w > WEIGHT_MAX {
                return Err(BenchError::Usage(format!(
                    "--{name} {w} is out of range: weights go from 0 to {WEIGHT_MAX}"
                )));
            }
        }
        if weights.iter().all(|&w| w == 0) {
            return Err(BenchError::Usage(
                "every weight is 0: give at least one priority a weight from 1 to 5".into(),
            ));
        }
        Ok(Priorities(weights))
    }
}

/// One way's score on one criterion, with the figure behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Criterion {
    pub name: String,
    /// From 0 (worst of the ways) to 1 (best).
    pub score: f64,
    /// The measured figure or property, in words.
    pub fact: String,
}

/// One way, its scores and where it ranked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ranked {
    pub way: String,
    pub label: String,
    /// Weighted mean of the criteria, 0 to 1.
    pub score: f64,
    pub criteria: Vec<Criterion>,
    /// One sentence: why it wins or loses.
    pub reason: String,
}

/// The four ways and the row each one's figures come from.
const WAYS: [(&str, &str, &str); 4] = [
    (
        "brokered",
        "brokered-acks-all-fsync",
        "brokered (stored durably, acks=all with fsync)",
    ),
    (
        "direct",
        "direct",
        "direct (done when a consumer handled it)",
    ),
    ("datagram", "datagram", "datagram (fire-and-forget)"),
    (
        "request",
        "request-direct",
        "request/response (over direct)",
    ),
];

/// Log-scaled position of `v` between the best and worst value, 1 for the best.
fn log_score(v: f64, best: f64, worst: f64) -> f64 {
    let (v, best, worst) = (v.max(1e-9), best.max(1e-9), worst.max(1e-9));
    if (worst.ln() - best.ln()).abs() < 1e-12 {
        return 1.0;
    }
    (1.0 - (v.ln() - best.ln()) / (worst.ln() - best.ln())).clamp(0.0, 1.0)
}

/// The rate every way is compared at: the fixed rate at which the most ways reported a latency
/// (the higher one of a tie).
fn reference_rate(rows: &[&Row]) -> Option<u64> {
    let mut rates: Vec<u64> = rows
        .iter()
        .flat_map(|r| r.cells.iter().filter_map(|c| c.offered_per_s))
        .collect();
    rates.sort_unstable();
    rates.dedup();
    rates.into_iter().max_by_key(|&rate| {
        let with = rows
            .iter()
            .filter(|r| {
                r.cells
                    .iter()
                    .any(|c| c.offered_per_s == Some(rate) && c.latency.is_some())
            })
            .count();
        (with, rate)
    })
}

/// A way's p99 at `rate`, or else at the fixed rate nearest to it (log scale) with a figure.
fn p99_near(row: &Row, rate: Option<u64>) -> Option<(u64, u64)> {
    let rate = rate?;
    row.cells
        .iter()
        .filter_map(|c| Some((c.offered_per_s?, c.latency?.p99_us)))
        .min_by(|a, b| {
            let d = |r: u64| ((r as f64).ln() - (rate as f64).ln()).abs();
            d(a.0).total_cmp(&d(b.0))
        })
}

fn cell_at(row: &Row, rate: Option<u64>) -> Option<&Cell> {
    row.cells.iter().find(|c| c.offered_per_s == rate)
}

fn fmt_us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

/// Scores every way from `m` and ranks them by `priorities`, best first.
pub fn rank(m: &Matrix, priorities: &Priorities) -> Result<Vec<Ranked>, BenchError> {
    let size = m.rows.first().map_or(1024, |r| r.size_bytes);
    let mut rows = Vec::new();
    for (way, row_id, label) in WAYS {
        let id = format!("{row_id}@{size}");
        let row = m
            .rows
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| BenchError::Usage(format!("the matrix has no row {id}")))?;
        rows.push((way, label, row));
    }
    let rate = reference_rate(&rows.iter().map(|r| r.2).collect::<Vec<_>>());
    let near: Vec<Option<(u64, u64)>> = rows.iter().map(|(_, _, r)| p99_near(r, rate)).collect();
    let p99: Vec<Option<u64>> = near.iter().map(|n| n.map(|(_, p)| p)).collect();
    let peak: Vec<f64> = rows
        .iter()
        .map(|(_, _, r)| {
            r.cells
                .iter()
                .map(|c| c.delivered_per_s)
                .fold(0.0, f64::max)
        })
        .collect();
    // CPU of every process per 100k events plus the memory of the processes other than the
    // bench's own, at the reference rate.
    let cost: Vec<(f64, f64)> = rows
        .iter()
        .map(|(_, _, r)| {
            let c = cell_at(r, rate);
            // The load generator is the bench's, not the way's: its line (the last) is left out.
            let way_processes = |c: &Cell| {
                let n = c.processes.len().saturating_sub(1);
                c.processes[..n].to_vec()
            };
            let cpu = c.map_or(0.0, |c| {
                way_processes(c)
                    .iter()
                    .filter_map(|p| p.cpu_s_per_100k)
                    .sum::<f64>()
            });
            let rss = c.map_or(0.0, |c| {
                way_processes(c)
                    .iter()
                    .skip(1)
                    .map(|p| p.rss_peak_bytes as f64 / (1u64 << 20) as f64)
                    .sum::<f64>()
            });
            (cpu, rss)
        })
        .collect();
    let known_p99: Vec<f64> = p99.iter().flatten().map(|&v| v as f64).collect();
    let (p99_best, p99_worst) = (
        known_p99.iter().copied().fold(f64::INFINITY, f64::min),
        known_p99.iter().copied().fold(0.0, f64::max),
    );
    let (peak_best, peak_worst) = (
        peak.iter().copied().fold(0.0, f64::max),
        peak.iter().copied().fold(f64::INFINITY, f64::min),
    );
    let cpu_all: Vec<f64> = cost.iter().map(|c| c.0).collect();
    let rss_all: Vec<f64> = cost.iter().map(|c| c.1 + 1.0).collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let property = |way: &str| m.properties.iter().find(|p| p.way == way);

    let mut ranked = Vec::new();
    for (i, (way, label, row)) in rows.iter().enumerate() {
        let props = property(way);
        let down = props.is_some_and(|p| p.survives_consumer_down.value);
        let crash = props.is_some_and(|p| p.survives_producer_crash.value);
        let broker = props.is_some_and(|p| p.needs_broker.value);
        let criteria = vec![
            Criterion {
                name: "latency".into(),
                // A way without any latency figure is neither rewarded nor punished.
                score: p99[i].map_or(0.5, |v| log_score(v as f64, p99_best, p99_worst)),
                fact: match near[i] {
                    Some((r, v)) => format!("p99 {} at {r}/s", fmt_us(v)),
                    None => "no latency figure in this run".into(),
                },
            },
            Criterion {
                name: "throughput".into(),
                score: log_score(peak[i], peak_best, peak_worst),
                fact: format!("up to {:.0} events/s", peak[i]),
            },
            Criterion {
                name: "durability".into(),
                score: 0.6 * f64::from(u8::from(down)) + 0.4 * f64::from(u8::from(crash)),
                fact: match (down, crash) {
                    (true, true) => {
                        "keeps events through a consumer outage and a producer crash".into()
                    }
                    (false, true) => {
                        "nothing is stored: a consumer outage fails the publish".into()
                    }
                    (false, false) => "loses what the consumer was not there to take".into(),
                    (true, false) => "survives a consumer outage only".into(),
                },
            },
            Criterion {
                name: "footprint".into(),
                score: 0.5 * log_score(cost[i].0, min(&cpu_all), max(&cpu_all))
                    + 0.5 * log_score(cost[i].1 + 1.0, min(&rss_all), max(&rss_all)),
                fact: format!(
                    "{:.2} CPU s per 100k events, {:.0} MiB in the processes it needs",
                    cost[i].0, cost[i].1
                ),
            },
            Criterion {
                name: "independence".into(),
                score: if broker { 0.0 } else { 1.0 },
                fact: if broker {
                    "needs a broker running".into()
                } else {
                    "needs no broker".into()
                },
            },
            Criterion {
                name: "confirmation".into(),
                score: match row.completion.as_str() {
                    "handled" | "replied" => 1.0,
                    "stored" => 0.5,
                    _ => 0.0,
                },
                fact: match row.completion.as_str() {
                    "handled" => "the publish returns once a consumer handled it".into(),
                    "replied" => "the caller gets the consumer's reply".into(),
                    "stored" => "the publish returns once the broker stored it, not handled".into(),
                    _ => "the sender never learns whether it arrived".into(),
                },
            },
        ];
        ranked.push(Ranked {
            way: way.to_string(),
            label: label.to_string(),
            score: 0.0,
            criteria,
            reason: String::new(),
        });
    }
    rerank(&mut ranked, priorities);
    Ok(ranked)
}

/// Recomputes the weighted scores, the order and the reasons for `priorities`.
pub fn rerank(ranked: &mut [Ranked], priorities: &Priorities) {
    let total: f64 = priorities
        .0
        .iter()
        .map(|&w| f64::from(w))
        .sum::<f64>()
        .max(1.0);
    for r in ranked.iter_mut() {
        r.score = r
            .criteria
            .iter()
            .zip(priorities.0)
            .map(|(c, w)| c.score * f64::from(w))
            .sum::<f64>()
            / total;
    }
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.way.cmp(&b.way)));
    let n = ranked.len();
    for (place, r) in ranked.iter_mut().enumerate() {
        // The criterion helping it most and the one costing it most, each by weight.
        let weighted = |c: &Criterion, w: u8| f64::from(w) * c.score;
        let lost = |c: &Criterion, w: u8| f64::from(w) * (1.0 - c.score);
        let pairs: Vec<(&Criterion, u8)> = r
            .criteria
            .iter()
            .zip(priorities.0)
            .filter(|(_, w)| *w > 0)
            .collect();
        let best = pairs
            .iter()
            .max_by(|a, b| weighted(a.0, a.1).total_cmp(&weighted(b.0, b.1)));
        let worst = pairs
            .iter()
            .max_by(|a, b| lost(a.0, a.1).total_cmp(&lost(b.0, b.1)));
        let verdict = if place == 0 {
            "wins"
        } else if place + 1 == n {
            "comes last"
        } else {
            "ranks in between"
        };
        let strength = |c: &Criterion| {
            if c.score > 0.5 {
                "is strong"
            } else {
                "does best"
            }
        };
        r.reason = match (best, worst) {
            (Some(b), Some(w)) if b.0.score == 0.0 => format!(
                "{} {verdict} ({:.2}): it scores lowest on what you weighted: {} ({}).",
                r.way, r.score, w.0.name, w.0.fact
            ),
            (Some(b), Some(w)) if b.0.name != w.0.name && w.0.score < 1.0 => format!(
                "{} {verdict} ({:.2}): it {} on {} ({}), and it gives up {} ({}).",
                r.way,
                r.score,
                strength(b.0),
                b.0.name,
                b.0.fact,
                w.0.name,
                w.0.fact
            ),
            (Some(b), _) => format!(
                "{} {verdict} ({:.2}): it {} on {} ({}).",
                r.way,
                r.score,
                strength(b.0),
                b.0.name,
                b.0.fact
            ),
            _ => format!("{} {verdict} ({:.2}).", r.way, r.score),
        };
    }
}

/// The ranking as numbered lines, one sentence each.
pub fn describe(ranked: &[Ranked]) -> String {
    ranked
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}. {}\n", i + 1, r.reason))
        .collect()
}

/// Reference figures shipped with Herald (one full run on a named machine, see
/// `docs/choosing-a-way.md`), for `herald advise` when no matrix was run here.
pub fn reference() -> Result<Matrix, BenchError> {
    Ok(serde_json::from_str(include_str!(
        "../reference/matrix.json"
    ))?)
}
