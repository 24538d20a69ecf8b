//! The HTML report opened in real headless Chromium, driven through chromedriver (WebDriver):
//! the table and the curves render, and moving priority sliders with the keyboard re-ranks the
//! ways. Screenshots are saved under the target directory (`report-screenshots/`) for people to
//! look at.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// How long chromedriver may take to listen.
const DRIVER_READY: Duration = Duration::from_secs(30);

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> (Driver, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: run scripts/install-test-deps (Debian: chromium chromium-driver)");
    let driver = Driver(child);
    let until = Instant::now() + DRIVER_READY;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "chromedriver did not listen within {DRIVER_READY:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (driver, port)
}

async fn ranking(client: &fantoccini::Client) -> Vec<String> {
    let mut ways = Vec::new();
    for li in client.find_all(Locator::Css("#ranking li")).await.unwrap() {
        ways.push(li.attr("data-way").await.unwrap().unwrap());
    }
    ways
}

/// Sets a slider to 0 (Home) or 5 (End) the way a user with a keyboard would.
async fn set(client: &fantoccini::Client, criterion: &str, high: bool) {
    let slider = client
        .find(Locator::Id(&format!("w-{criterion}")))
        .await
        .unwrap();
    let key = if high { Key::End } else { Key::Home };
    slider
        .send_keys(&char::from(key).to_string())
        .await
        .unwrap();
    let shown = client
        .find(Locator::Id(&format!("o-{criterion}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, if high { "5" } else { "0" }, "slider {criterion}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_renders_and_sliders_rerank_in_chromium() {
    let matrix = herald_bench::score::reference().unwrap();
    let html = herald_bench::html::render(&matrix).unwrap();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let page = shots.join("report.html");
    std::fs::write(&page, html).unwrap();
    let profile = tempfile::tempdir().unwrap();

    let (_driver, port) = start_driver();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1400,2200",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    client
        .goto(&format!("file://{}", page.display()))
        .await
        .unwrap();

    // The table has one line per row and rate; the two charts draw one curve per row.
    let cells: usize = matrix.rows.iter().map(|r| r.cells.len()).sum();
    let lines = client
        .find_all(Locator::Css("#table tbody tr"))
        .await
        .unwrap();
    assert_eq!(lines.len(), cells);
    let charts = client.find_all(Locator::Css("svg.chart")).await.unwrap();
    assert_eq!(charts.len(), 2);
    let curves = client
        .find_all(Locator::Css("svg.chart polyline"))
        .await
        .unwrap();
    assert!(curves.len() >= 2 * 4, "{} curves", curves.len());
    let balanced = ranking(&client).await;
    assert_eq!(balanced.len(), 4);
    std::fs::write(
        shots.join("1-balanced.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // Durability alone: only the broker keeps events through a consumer outage.
    for c in herald_bench::score::CRITERIA {
        set(&client, c, c == "durability").await;
    }
    let durable = ranking(&client).await;
    assert_eq!(durable[0], "brokered", "{durable:?}");
    std::fs::write(
        shots.join("2-durability-only.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // Independence and confirmation: the broker goes to the bottom half.
    set(&client, "durability", false).await;
    set(&client, "independence", true).await;
    set(&client, "confirmation", true).await;
    let brokerless = ranking(&client).await;
    assert_ne!(brokerless, durable);
    assert!(
        brokerless.iter().position(|w| w == "brokered").unwrap() >= 2,
        "{brokerless:?}"
    );
    std::fs::write(
        shots.join("3-independence-confirmation.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();
    client.close().await.unwrap();
}
