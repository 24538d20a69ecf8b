//! `compare`: the same load through both designs of the notifications example, with the SMS
//! service crashing and coming back in the middle, and a table of what each design did.
//!
//! The direct-call design (`notification-service --via http` calling `sms-service --listen`,
//! then `usage-service --via http`) against the event design (the notification service
//! publishes to the broker; `sms-service` and `usage-service` are two consumer groups on `sms`).
//! The services run as separate processes, started from the directory this binary is in (build
//! the package first: `cargo build --release -p notifications`). The broker is one embedded in
//! this process unless `--bootstrap` names one (`herald serve`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use herald_broker::{Broker, BrokerConfig};
use notifications::client::{self, Answer, CallError};
use notifications::messages::Names;
use notifications::provider::SentSms;
use notifications::usage::Totals;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a service may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at the provider log and the usage counts while settling.
const SETTLE_POLL: Duration = Duration::from_millis(100);
/// Longest load accepted, so a typo cannot start an hour-long run.
const NOTIFICATIONS_MAX: u32 = 1_000_000;

/// Posts the same notifications through the direct-call design and the event design while the
/// SMS service is down for a while in the middle, and prints what each design did.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Notifications posted per design.
    #[arg(long, default_value_t = 2_000)]
    notifications: u32,
    /// Notifications posted per second (open loop: on schedule, whatever the answers).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long the SMS service is down (SIGKILL, then a restart), centred on the load.
    #[arg(long, default_value_t = 3_000)]
    outage_ms: u64,
    /// How long each call to the stand-in SMS provider takes.
    #[arg(long, default_value_t = 100)]
    provider_ms: u64,
    /// Distinct recipients the notifications go to, in turn.
    #[arg(long, default_value_t = 100)]
    recipients: u32,
    /// The designs to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Design::Http, Design::Events])]
    designs: Vec<Design>,
    /// Kafka address of a running broker (`herald serve`); by default one is embedded here.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Where the service binaries are; by default the directory of this one.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Longest wait for the notification service's answer to one post.
    #[arg(long, default_value_t = 10_000)]
    answer_timeout_ms: u64,
    /// Longest wait, after the load, for the event design to send and count its backlog.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// The consumers' session timeout: a crashed SMS service's partitions wait this long for
    /// their next owner.
    #[arg(long, default_value_t = 6_000)]
    session_timeout_ms: u64,
    /// Let the services log to this process's stderr (at `RUST_LOG`, default warn).
    #[arg(long)]
    service_logs: bool,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Given to every service it starts, so a run can share a broker with others.
    #[command(flatten)]
    names: Names,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Design {
    /// The notification service calls the SMS service over HTTP and waits.
    Http,
    /// The notification service publishes to the broker; the SMS service consumes.
    Events,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// What one design did.
#[derive(Debug, Serialize)]
struct Report {
    design: Design,
    notifications: u32,
    /// Posts answered with success (202 stored, or 200 sent).
    answered_ok: usize,
    /// Response time of the successful answers, from each post's scheduled time.
    p50_ms: f64,
    p99_ms: f64,
    /// Answered with an error saying nothing was sent (SMS service unreachable or failing).
    refused: usize,
    /// No answer, or one saying the outcome is unknown (the SMS service died mid-call).
    lost: usize,
    /// Distinct notifications the provider sent by the end.
    sms_sent: usize,
    /// Provider sends beyond one per notification.
    sms_sent_twice: usize,
    /// The usage service's total.
    usage_counted: u64,
    /// Redeliveries and repeats the usage service ignored.
    usage_duplicates_ignored: u64,
    /// From the SMS service's SIGKILL to its restart.
    outage_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    if args.notifications == 0 || args.notifications > NOTIFICATIONS_MAX {
        bail!("--notifications must be 1 to {NOTIFICATIONS_MAX}");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if args.recipients == 0 {
        bail!("--recipients must be at least 1");
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf(),
    };
    let work = tempfile::tempdir().context("creating a work directory")?;
    let mut embedded = None;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            let broker = Broker::start(BrokerConfig {
                data_dir: work.path().join("broker"),
                kafka_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..BrokerConfig::default()
            })
            .await
            .context("starting the embedded broker")?;
            let addr = broker.kafka_addr().to_string();
            embedded = Some(broker);
            addr
        }
    };
    let run = Run {
        args: &args,
        bin_dir: &bin_dir,
        work: work.path(),
        bootstrap: &bootstrap,
    };
    let mut reports = Vec::new();
    for design in &args.designs {
        let report = run
            .design(*design)
            .await
            .with_context(|| format!("running the {design:?} design"))?;
        if args.output == Output::Json {
            println!("{}", serde_json::to_string(&report)?);
        }
        reports.push(report);
    }
    if args.output == Output::Table {
        print_table(&args, &reports);
    }
    if let Some(broker) = embedded {
        broker
            .shutdown()
            .await
            .context("stopping the embedded broker")?;
    }
    Ok(())
}

fn print_table(args: &Args, reports: &[Report]) {
    println!(
        "{} notifications at {}/s per design, SMS service killed for {} ms in the middle, provider {} ms per call",
        args.notifications, args.rate, args.outage_ms, args.provider_ms
    );
    println!();
    println!(
        "| design | answered ok | p50 | p99 | refused | lost | SMS sent in the end | sent twice | usage counted |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let name = match r.design {
            Design::Http => "direct (HTTP calls)",
            Design::Events => "events (broker)",
        };
        println!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {} | {} | {} | {} | {} |",
            r.answered_ok,
            r.p50_ms,
            r.p99_ms,
            r.refused,
            r.lost,
            r.sms_sent,
            r.sms_sent_twice,
            r.usage_counted
        );
    }
}

struct Run<'a> {
    args: &'a Args,
    bin_dir: &'a Path,
    work: &'a Path,
    bootstrap: &'a str,
}

/// A service process; `addr` is where it serves HTTP, if it does.
struct Service {
    child: Child,
    addr: Option<SocketAddr>,
    /// Held open so the process never writes to a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Run<'_> {
    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(binary));
        command
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .args(self.args.names.args());
        if self.args.service_logs {
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "warn");
            }
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::null());
        }
        command
    }

    async fn design(&self, design: Design) -> anyhow::Result<Report> {
        let dir = self.work.join(format!("{design:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        let provider_log = dir.join("provider.log");
        let usage_state = dir.join("usage.json");
        let via = match design {
            Design::Http => "http",
            Design::Events => "broker",
        };
        let session = self.args.session_timeout_ms.to_string();
        let provider_ms = self.args.provider_ms.to_string();

        let mut usage = self.command("usage-service");
        usage
            .args(["--listen", "127.0.0.1:0", "--via", via, "--state"])
            .arg(&usage_state)
            .args([
                "--bootstrap",
                self.bootstrap,
                "--session-timeout-ms",
                &session,
            ]);
        let mut usage = start(usage, true).await.context("starting usage-service")?;
        let usage_addr = listening(&usage)?;

        let sms_args = |listen: Option<SocketAddr>| {
            let mut sms = self.command("sms-service");
            sms.arg("--provider-log")
                .arg(&provider_log)
                .args(["--provider-ms", &provider_ms, "--concurrency", "64"])
                .args([
                    "--bootstrap",
                    self.bootstrap,
                    "--session-timeout-ms",
                    &session,
                ]);
            if let Some(addr) = listen {
                sms.args(["--listen", &addr.to_string()]);
            }
            sms
        };
        let first_listen = (design == Design::Http).then(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let sms = start(sms_args(first_listen), design == Design::Http)
            .await
            .context("starting sms-service")?;
        // The direct design's callers know the SMS service's address, so its restart reuses it.
        let sms_listen = sms.addr;

        let mut web = self.command("notification-service");
        web.args(["--listen", "127.0.0.1:0", "--via", via])
            .args(["--bootstrap", self.bootstrap]);
        if let Some(addr) = sms_listen {
            web.args(["--sms-url", &format!("http://{addr}")])
                .args(["--usage-url", &format!("http://{usage_addr}")]);
        }
        let mut web = start(web, true)
            .await
            .context("starting notification-service")?;
        let web_addr = listening(&web)?;

        let load_secs = f64::from(self.args.notifications) / self.args.rate;
        let began = Instant::now() + Duration::from_millis(100);
        let outage = Duration::from_millis(self.args.outage_ms);
        let outage_at = began + Duration::from_secs_f64(load_secs / 2.0).saturating_sub(outage / 2);
        let outage_task = {
            let restart = sms_args(sms_listen);
            let http = design == Design::Http;
            tokio::spawn(async move {
                let mut sms = sms;
                tokio::time::sleep_until(outage_at.into()).await;
                // SIGKILL: a crash, with SMS in flight and nothing committed on the way out.
                sms.child.start_kill()?;
                sms.child.wait().await?;
                let down = Instant::now();
                tokio::time::sleep(outage).await;
                let sms = start(restart, http)
                    .await
                    .context("restarting sms-service")?;
                anyhow::Ok((sms, down.elapsed()))
            })
        };

        let outcomes = self.post_load(web_addr, began).await;
        let (mut sms, outage_took) = outage_task.await??;

        let mut ok = Vec::new();
        let (mut refused, mut lost) = (0, 0);
        for outcome in &outcomes {
            match outcome {
                (took, Ok(answer)) if answer.is_success() => ok.push(*took),
                // 504: the SMS service broke off or did not answer; nobody knows if it sent.
                (_, Ok(answer)) if answer.status == 504 => lost += 1,
                (_, Ok(_)) => refused += 1,
                (_, Err(_)) => lost += 1,
            }
        }
        ok.sort();

        // The event design finishes its backlog after the load; the direct design is done.
        let settle_until = Instant::now() + Duration::from_secs(self.args.settle_secs);
        let mut totals;
        loop {
            let (sent, _) = sent_counts(&provider_log)?;
            totals = usage_totals(usage_addr).await?;
            let done =
                design == Design::Http || (sent >= ok.len() && totals.total >= ok.len() as u64);
            if done || Instant::now() >= settle_until {
                break;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
        let (sms_sent, sms_lines) = sent_counts(&provider_log)?;

        for service in [&mut web, &mut sms, &mut usage] {
            stop(&mut service.child).await?;
        }
        Ok(Report {
            design,
            notifications: self.args.notifications,
            answered_ok: ok.len(),
            p50_ms: percentile_ms(&ok, 0.50),
            p99_ms: percentile_ms(&ok, 0.99),
            refused,
            lost,
            sms_sent,
            sms_sent_twice: sms_lines - sms_sent,
            usage_counted: totals.total,
            usage_duplicates_ignored: totals.duplicates_ignored,
            outage_ms: u64::try_from(outage_took.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Posts every notification on schedule from `began`, each on its own task; returns each
    /// one's response time (from its scheduled moment) and answer.
    async fn post_load(
        &self,
        web: SocketAddr,
        began: Instant,
    ) -> Vec<(Duration, Result<Answer, CallError>)> {
        let timeout = Duration::from_millis(self.args.answer_timeout_ms);
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..self.args.notifications {
            let at = began + Duration::from_secs_f64(f64::from(i) / self.args.rate);
            tokio::time::sleep_until(at.into()).await;
            let body = json!({
                "to": format!("+1555{:06}", i % self.args.recipients),
                "text": format!("notification {i}"),
            });
            let authority = web.to_string();
            posts.spawn(async move {
                let answer =
                    client::call(&authority, "POST", "/notifications", Some(&body), timeout).await;
                (at.elapsed(), answer)
            });
        }
        let mut outcomes = Vec::with_capacity(posts.len());
        while let Some(done) = posts.join_next().await {
            if let Ok(outcome) = done {
                outcomes.push(outcome);
            }
        }
        outcomes
    }
}

/// Starts `command`; when `serves_http`, waits for its `listening on ADDR` line.
async fn start(mut command: Command, serves_http: bool) -> anyhow::Result<Service> {
    command.stdout(if serves_http {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command
        .spawn()
        .context("spawning (is the package built?)")?;
    if !serves_http {
        return Ok(Service {
            child,
            addr: None,
            _stdout: None,
        });
    }
    let stdout = child.stdout.take().context("no stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line))
        .await
        .context("the service did not start listening in time")??;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .parse()?;
    Ok(Service {
        child,
        addr: Some(addr),
        _stdout: Some(stdout),
    })
}

fn listening(service: &Service) -> anyhow::Result<SocketAddr> {
    service.addr.context("the service printed no address")
}

/// SIGTERM, then SIGKILL if it has not stopped in time.
async fn stop(child: &mut Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: kill(2) only sends a signal; the pid is our own child, not yet reaped (we
        // hold its handle), so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(STOP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        child.start_kill()?;
        child.wait().await?;
    }
    Ok(())
}

/// Distinct notifications in the provider log, and its lines.
fn sent_counts(path: &Path) -> anyhow::Result<(usize, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut ids = HashSet::new();
    let mut lines = 0;
    // A line being written right now may be incomplete: only whole lines count.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let sms: SentSms = serde_json::from_str(line.trim_end())?;
        ids.insert(sms.id);
        lines += 1;
    }
    Ok((ids.len(), lines))
}

async fn usage_totals(addr: SocketAddr) -> anyhow::Result<Totals> {
    let answer = client::call(
        &addr.to_string(),
        "GET",
        "/usage",
        None,
        Duration::from_secs(10),
    )
    .await?;
    Ok(serde_json::from_value(answer.body)?)
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least q of the values at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}
