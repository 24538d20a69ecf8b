//! Integration tests of herald-bench, one binary: the HTML report in a real browser.

#![allow(clippy::unwrap_used)]

mod report;
