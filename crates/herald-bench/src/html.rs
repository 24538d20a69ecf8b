//! The self-contained HTML report of a matrix run: the run's JSON embedded in one file with
//! inline script and style (no network, no CDN), drawing latency-against-throughput curves per
//! row as inline SVG on log axes, the table, the properties, and sliders for the priorities that
//! re-rank the ways in the browser from the scores [`crate::score`] computed.

use crate::BenchError;
use crate::matrix::Matrix;
use crate::score::{CRITERIA, CRITERIA_HELP};

const TEMPLATE: &str = include_str!("report.html");

/// The report for `m` as one HTML document.
pub fn render(m: &Matrix) -> Result<String, BenchError> {
    // `</` inside a script element would end it early; JSON allows `<\/` for it.
    let json = serde_json::to_string(m)?.replace("</", "<\\/");
    Ok(TEMPLATE
        .replace("__CRITERIA__", &serde_json::to_string(&CRITERIA)?)
        .replace("__CRITERIA_HELP__", &serde_json::to_string(&CRITERIA_HELP)?)
        .replace("__MATRIX_JSON__", &json))
}
