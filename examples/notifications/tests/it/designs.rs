//! The two designs side by side: the direct-call design refuses what it cannot send while the
//! SMS service is down, the usage service counts each notification once across its own crash,
//! and `compare` reports that the event design lost nothing where the direct one did. The
//! direct-call design needs no broker; the others use the broker of `start_broker`, Herald's
//! or the external one `HERALD_TEST_BOOTSTRAP` names.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::processes::{
    HttpService, SESSION_TIMEOUT_MS, get, http, post, start_broker, start_http_service,
    start_notification_service, terminate,
};
use crate::support::{PATIENCE, provider_log, wait_for};

fn usage_service(state: &Path, extra: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usage-service"));
    command
        .arg("--state")
        .arg(state)
        .args(["--session-timeout-ms", SESSION_TIMEOUT_MS])
        .args(extra);
    command
}

async fn usage_totals(usage: &HttpService) -> Value {
    let (status, body) = http(usage.addr, "GET", "/usage", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn usage_of(usage: &HttpService, to: &str) -> u64 {
    let (status, body) = http(usage.addr, "GET", &format!("/usage/{to}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

async fn wait_usage_total(usage: &HttpService, want: u64) -> Value {
    wait_for(&format!("a usage total of {want}"), || async {
        let totals = usage_totals(usage).await;
        (totals["total"].as_u64() == Some(want)).then_some(totals)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_design_waits_for_the_provider_and_refuses_while_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("provider.log");
    let mut sms_command = Command::new(env!("CARGO_BIN_EXE_sms-service"));
    sms_command
        .arg("--provider-log")
        .arg(&log)
        .args(["--listen", "127.0.0.1:0"]);
    let mut sms = start_http_service(sms_command).await;
    let mut usage = start_http_service(usage_service(
        &dir.path().join("usage.json"),
        &["--via", "http"],
    ))
    .await;
    let sms_url = format!("http://{}", sms.addr);
    let usage_url = format!("http://{}", usage.addr);
    let mut web = start_http_service({
        let mut c = Command::new(env!("CARGO_BIN_EXE_notification-service"));
        c.args([
            "--via",
            "http",
            "--sms-url",
            &sms_url,
            "--usage-url",
            &usage_url,
        ]);
        c
    })
    .await;

    // The answer comes once the provider sent it, and says so.
    let body = json!({"to": "+4410000", "text": "called through"});
    let (status, answer) = http(web.addr, "POST", "/notifications", Some(body.clone())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "sent");
    assert_eq!(answer["usage_counted"], true);
    let id = answer["id"].as_str().unwrap().to_string();
    assert_eq!(provider_log(&log).len(), 1);
    assert_eq!(usage_of(&usage, "+4410000").await, 1);
    let (_, shown) = get(web.addr, &id).await;
    assert_eq!(shown["status"], "sent", "{shown}");

    // With the SMS service down, nothing keeps the request: it is refused.
    sms.child.kill().await.unwrap();
    let (status, answer) = http(web.addr, "POST", "/notifications", Some(body)).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("nothing was sent"),
        "{answer}"
    );
    let refused = answer["id"].as_str().unwrap();
    let (_, shown) = get(web.addr, refused).await;
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(provider_log(&log).len(), 1);
    assert_eq!(usage_of(&usage, "+4410000").await, 1);

    assert!(terminate(&mut web.child).await.success());
    assert!(terminate(&mut usage.child).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_usage_service_counts_each_notification_once() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("usage.json");
    let mut web = start_notification_service(&broker, &[]).await;
    let recipients = ["+4430001", "+4430002", "+4430003"];
    let mut posted = [0u64; 3];
    let mut post_some = async |n: usize| {
        for i in 0..n {
            let r = i % recipients.len();
            post(web.addr, recipients[r], &format!("usage {i}")).await;
            posted[r] += 1;
        }
    };

    // Nothing is committed while this one runs, so after its crash every event it counted is
    // delivered again.
    let mut args = broker.service_args();
    args.extend(["--commit-interval-ms".to_string(), "3600000".to_string()]);
    let mut usage = start_http_service(usage_service(&state, &args)).await;
    post_some(20).await;
    wait_usage_total(&usage, 20).await;
    usage.child.kill().await.unwrap();

    post_some(10).await;
    let mut usage = start_http_service(usage_service(&state, &broker.service_args())).await;
    let totals = wait_usage_total(&usage, 30).await;
    // Redeliveries were skipped by id, not merely absent.
    let skipped = wait_for("the redelivered events to be skipped", || async {
        let totals = usage_totals(&usage).await;
        let skipped = totals["duplicates_ignored"].as_u64().unwrap();
        (skipped >= 20).then_some(skipped)
    })
    .await;
    assert_eq!(skipped, 20, "{totals}");
    assert_eq!(usage_totals(&usage).await["total"], 30);
    for (to, want) in recipients.iter().zip(posted) {
        assert_eq!(usage_of(&usage, to).await, want, "{to}");
    }

    assert!(terminate(&mut usage.child).await.success());
    assert!(terminate(&mut web.child).await.success());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_shows_the_direct_design_losing_what_events_keep() {
    let broker = start_broker().await;
    let compare = env!("CARGO_BIN_EXE_compare");
    let bin_dir = Path::new(compare).parent().unwrap();
    let run = Command::new(compare)
        .args([
            "--notifications",
            "120",
            "--rate",
            "60",
            "--outage-ms",
            "800",
        ])
        .args([
            "--provider-ms",
            "5",
            "--recipients",
            "12",
            "--output",
            "json",
        ])
        .args(["--session-timeout-ms", SESSION_TIMEOUT_MS])
        .args(broker.service_args())
        .arg("--bin-dir")
        .arg(bin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE * 2, run)
        .await
        .expect("compare did not finish in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let reports: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let [direct, events] = &reports[..] else {
        panic!("expected two reports: {stdout}")
    };
    let n = |r: &Value, field: &str| r[field].as_u64().unwrap_or_else(|| panic!("{field}: {r}"));

    assert_eq!(direct["design"], "http");
    // Posts during the outage were refused or lost; what was answered was sent and counted once.
    assert!(n(direct, "refused") + n(direct, "lost") > 0, "{direct}");
    assert!(n(direct, "answered_ok") < 120, "{direct}");
    assert!(
        n(direct, "sms_sent") >= n(direct, "answered_ok"),
        "{direct}"
    );
    assert!(
        n(direct, "sms_sent") <= n(direct, "answered_ok") + n(direct, "lost"),
        "{direct}"
    );
    assert!(
        n(direct, "usage_counted") <= n(direct, "sms_sent"),
        "{direct}"
    );
    assert_eq!(n(direct, "sms_sent_twice"), 0, "{direct}");

    assert_eq!(events["design"], "events");
    // Every post was stored, and every SMS went out after the restart, once, counted once.
    assert_eq!(n(events, "answered_ok"), 120, "{events}");
    assert_eq!(n(events, "refused") + n(events, "lost"), 0, "{events}");
    assert_eq!(n(events, "sms_sent"), 120, "{events}");
    assert_eq!(n(events, "sms_sent_twice"), 0, "{events}");
    assert_eq!(n(events, "usage_counted"), 120, "{events}");

    broker.shutdown().await;
}
