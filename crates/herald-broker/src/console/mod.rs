//! The web console at `/`: server-rendered page shells that a small embedded script
//! (`console.js`, hand-written, with its own SVG charts) fills from the `/api/v1` endpoints and
//! keeps live by polling. Everything is compiled into the binary: the console works without a
//! network connection and needs no build step.
//!
//! Data from the broker (topic names, keys, values) only ever reaches the page as text: the
//! shells escape what they embed, and the script sets `textContent`, never HTML.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::api::ApiState;

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// The console's routes.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/topics", get(topics))
        .route("/topics/{topic}", get(topic))
        .route("/groups", get(groups))
        .route("/groups/{group}", get(group))
        .route("/peers", get(peers))
        .route("/bench", get(bench))
        .route("/bench/report", get(crate::api::bench::report))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .with_state(state)
}

/// `text` with the characters that mean something in HTML replaced by entities.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: the navigation, the CSRF token for the script, and `main` (already escaped).
fn page(state: &ApiState, title: &str, current: &str, main: &str) -> Response {
    let nav = [
        ("/", "Overview"),
        ("/topics", "Topics"),
        ("/groups", "Groups"),
        ("/peers", "Peers"),
        ("/bench", "Trade-offs"),
    ]
    .iter()
    .map(|(href, label)| {
        let here = if *href == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{here}>{label}</a>")
    })
    .collect::<String>();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"csrf-token\" content=\"{csrf}\">\
<title>{title} · Herald</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
<body><header><span class=\"brand\">Herald</span><nav>{nav}</nav>\
<span id=\"status\" class=\"status\">…</span></header>\
<main id=\"main\" {main}</main>\
<script src=\"/assets/console.js\"></script></body></html>\n",
        csrf = escape(&state.csrf),
        title = escape(title),
    );
    Html(html).into_response()
}

async fn overview(State(state): State<ApiState>) -> Response {
    let summary = crate::api::topics::broker_summary(&state);
    // The first figures are rendered here, so the page shows something before the script runs.
    let main = format!(
        "data-page=\"overview\"><h1>Overview</h1><section class=\"cards\" id=\"cards\">\
<div class=\"card\"><span>Topics</span><b>{}</b></div>\
<div class=\"card\"><span>Partitions</span><b>{}</b></div>\
<div class=\"card\"><span>Groups</span><b>{}</b></div>\
<div class=\"card\"><span>Connections</span><b>{}</b></div></section>\
<section><h2>Throughput (last hour)</h2><div class=\"chart\" id=\"chart-throughput\"></div></section>\
<section><h2>Storage (last hour)</h2><div class=\"chart\" id=\"chart-storage\"></div></section>\
<section><h2>Groups</h2><div class=\"scroll\"><table id=\"groups\"><thead><tr><th>Group</th>\
<th>State</th><th>Members</th><th class=\"num\">Lag</th></tr></thead><tbody></tbody></table></div></section>",
        summary["topics"], summary["partitions"], summary["groups"], summary["connections_open"],
    );
    page(&state, "Overview", "/", &main)
}

async fn topics(State(state): State<ApiState>) -> Response {
    let main = "data-page=\"topics\"><h1>Topics</h1>\
<form id=\"create-topic\" class=\"inline\"><label>Name <input name=\"name\" required maxlength=\"249\"></label>\
<label>Partitions <input name=\"partitions\" type=\"number\" min=\"1\" value=\"1\"></label>\
<button type=\"submit\">Create topic</button><span class=\"message\" id=\"create-message\"></span></form>\
<div class=\"scroll\"><table id=\"topics\"><thead><tr><th>Topic</th><th class=\"num\">Partitions</th>\
<th class=\"num\">Messages</th><th class=\"num\">Size</th><th class=\"num\">Retention</th>\
<th class=\"num\">In/s</th><th class=\"num\">Out/s</th></tr></thead><tbody></tbody></table></div>";
    page(&state, "Topics", "/topics", main)
}

async fn topic(State(state): State<ApiState>, Path(topic): Path<String>) -> Response {
    let name = escape(&topic);
    let main = format!(
        "data-page=\"topic\" data-topic=\"{name}\"><h1>Topic <code>{name}</code></h1>\
<section><h2>Partitions</h2><div class=\"scroll\"><table id=\"partitions\"><thead><tr><th>Partition</th>\
<th class=\"num\">Start</th><th class=\"num\">End</th><th class=\"num\">Messages</th><th class=\"num\">Size</th>\
</tr></thead><tbody></tbody></table></div>\
<form id=\"add-partitions\" class=\"inline\"><label>Partitions in total <input name=\"count\" type=\"number\" min=\"1\"></label>\
<button type=\"submit\">Add partitions</button></form></section>\
<section><h2>Messages</h2><form id=\"browse\" class=\"inline\">\
<label>Partition <select name=\"partition\"></select></label>\
<label>Start <select name=\"from\"><option value=\"start\">beginning</option><option value=\"offset\">offset</option>\
<option value=\"time\">time</option><option value=\"newest\">newest</option></select></label>\
<label>At <input name=\"at\" placeholder=\"offset or 2026-01-01T00:00:00Z\"></label>\
<label>Key <input name=\"key\"></label>\
<label>Show <select name=\"format\"><option>auto</option><option>text</option><option>json</option><option>hex</option></select></label>\
<button type=\"submit\">Load</button></form>\
<div class=\"scroll\"><table id=\"messages\"><thead><tr><th class=\"num\">Offset</th><th>Time</th><th>Key</th>\
<th>Value</th><th>Headers</th></tr></thead><tbody></tbody></table></div>\
<button id=\"more\" type=\"button\" hidden>Load more</button><span class=\"message\" id=\"browse-message\"></span></section>\
<section><h2>Produce a test message</h2><form id=\"produce\" class=\"stack\">\
<label>Partition <select name=\"partition\"></select></label><label>Key <input name=\"key\"></label>\
<label>Value <textarea name=\"value\" rows=\"3\"></textarea></label>\
<label>Headers (one name=value a line) <textarea name=\"headers\" rows=\"2\"></textarea></label>\
<button type=\"submit\">Produce</button><span class=\"message\" id=\"produce-message\"></span></form></section>\
<section><h2>Configs</h2><div class=\"scroll\"><table id=\"configs\"><thead><tr><th>Name</th><th>Value</th><th></th>\
</tr></thead><tbody></tbody></table></div><span class=\"message\" id=\"config-message\"></span></section>\
<section class=\"danger\"><h2>Delete</h2><form id=\"delete-topic\" class=\"inline\">\
<label>Type the topic name to delete it <input name=\"confirm\" autocomplete=\"off\"></label>\
<button type=\"submit\">Delete topic</button><span class=\"message\" id=\"delete-message\"></span></form></section>"
    );
    page(&state, &format!("Topic {topic}"), "/topics", &main)
}

async fn groups(State(state): State<ApiState>) -> Response {
    let main = "data-page=\"groups\"><h1>Consumer groups</h1><div class=\"scroll\"><table id=\"groups\"><thead><tr>\
<th>Group</th><th>State</th><th class=\"num\">Members</th><th class=\"num\">Partitions</th>\
<th class=\"num\">Lag</th></tr></thead><tbody></tbody></table></div>";
    page(&state, "Groups", "/groups", main)
}

async fn group(State(state): State<ApiState>, Path(group): Path<String>) -> Response {
    let name = escape(&group);
    let main = format!(
        "data-page=\"group\" data-group=\"{name}\"><h1>Group <code>{name}</code></h1>\
<section class=\"cards\"><div class=\"card\"><span>State</span><b id=\"group-state\">…</b></div>\
<div class=\"card\"><span>Total lag</span><b id=\"group-lag\">…</b></div></section>\
<section><h2>Lag over time</h2><div class=\"chart\" id=\"chart-lag\"></div></section>\
<section><h2>Partitions</h2><div class=\"scroll\"><table id=\"offsets\"><thead><tr><th>Topic</th>\
<th class=\"num\">Partition</th><th class=\"num\">Committed</th><th class=\"num\">End</th><th class=\"num\">Lag</th>\
</tr></thead><tbody></tbody></table></div></section>\
<section><h2>Members</h2><div class=\"scroll\"><table id=\"members\"><thead><tr><th>Member</th><th>Client</th>\
<th>Host</th><th>Assignment</th></tr></thead><tbody></tbody></table></div></section>\
<section><h2>Reset offsets</h2><form id=\"reset\" class=\"inline\">\
<label>Topic <input name=\"topic\" placeholder=\"all committed\"></label>\
<label>To <select name=\"to\"><option>earliest</option><option>latest</option><option>offset</option>\
<option>timestamp</option><option>shift</option></select></label>\
<label>Value <input name=\"value\" placeholder=\"offset, ms or shift\"></label>\
<button type=\"submit\">Preview</button><button type=\"button\" id=\"apply-reset\" disabled>Apply</button></form>\
<div class=\"scroll\"><table id=\"reset-preview\"><thead><tr><th>Topic</th><th class=\"num\">Partition</th>\
<th class=\"num\">Current</th><th class=\"num\">New</th><th class=\"num\">Lag after</th></tr></thead><tbody></tbody></table></div>\
<span class=\"message\" id=\"reset-message\"></span></section>\
<section class=\"danger\"><h2>Delete</h2><button type=\"button\" id=\"delete-group\">Delete group</button>\
<span class=\"message\" id=\"delete-message\"></span></section>"
    );
    page(&state, &format!("Group {group}"), "/groups", &main)
}

async fn peers(State(state): State<ApiState>) -> Response {
    let main = "data-page=\"peers\"><h1>Peers</h1>\
<p>Brokerless members this broker sees on the LAN by mDNS, read only. Load is the events a member \
has in flight out of its capacity, as it last announced them: members re-announce a changed load \
every few seconds at most, and older members announce none.</p>\
<p class=\"message\" id=\"peers-off\" hidden></p>\
<div class=\"scroll\"><table id=\"peers\"><thead><tr><th>Topic</th><th>Group</th><th>Addresses</th>\
<th class=\"num\">Load / capacity</th><th class=\"num\">Version</th><th>Last seen</th></tr></thead><tbody></tbody></table></div>\
<p class=\"message\" id=\"peers-empty\" hidden>No members seen yet.</p>";
    page(&state, "Peers", "/peers", main)
}

async fn bench(State(state): State<ApiState>) -> Response {
    let main = "data-page=\"bench\"><h1>Trade-offs</h1>\
<p>The results of <code>herald bench matrix</code>: what each way of moving events costs at each rate, \
ranked by the priorities you set with the sliders.</p>\
<form id=\"bench-upload\" class=\"inline\"><label>Results (the matrix JSON) \
<input type=\"file\" name=\"file\" accept=\"application/json,.json\"></label>\
<button type=\"submit\">Upload</button><span class=\"message\" id=\"bench-message\"></span></form>\
<p class=\"message\" id=\"bench-empty\" hidden>No results yet: upload the JSON that \
<code>herald bench matrix</code> wrote.</p>\
<iframe id=\"bench-report\" title=\"Trade-off table\" hidden></iframe>";
    page(&state, "Trade-offs", "/bench", main)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<script>\"a\"&'b'</script>"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }
}
