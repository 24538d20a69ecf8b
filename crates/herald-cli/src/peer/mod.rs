//! `herald peer`: brokerless events between processes: `listen` serves a topic as a group member,
//! `publish` sends stdin lines as direct or datagram events, `request`/`reply` do
//! request/response from a shell, and `bench` measures all of it against bare sockets.

mod bench;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use herald_direct::DatagramSeal;
use herald_direct::handshake::GroupKey;
use herald_direct::keys::SecretKey;
use herald_direct::seal::DatagramKey;
use herald_direct::tls::{MemberTls, PublisherTls, TlsFiles};
use herald_direct::{
    BoxFuture, DatagramError, Handler, HandlerError, Member, MemberConfig, Message, PublishError,
    Publisher, PublisherConfig, Received, RequestContext, RequestError,
};
use serde::Serialize;

use crate::process::{self, LogFormat, log_filter, stop_signal};
use crate::{CliError, Global, Output};

/// Environment variable carrying a request's absolute deadline (ms since the Unix epoch) into a
/// `reply --command` child, so a nested `herald peer request` inherits the remaining budget.
pub const DEADLINE_ENV: &str = "HERALD_DEADLINE_UNIX_MS";
/// Longest stdin line `publish` accepts as one event.
const LINE_BYTES_MAX: usize = 1024 * 1024;

/// `herald peer`: brokerless delivery between processes.
#[derive(Debug, clap::Subcommand)]
pub enum PeerCommand {
    /// Serve a topic as a member of a group: direct events on TCP, datagrams on UDP (same port).
    Listen(ListenArgs),
    /// Publish one event per stdin line to every group serving the topic.
    Publish(PublishArgs),
    /// Send one request and print the response.
    Request(RequestArgs),
    /// Answer requests (and direct events) by running a shell command with the payload on stdin.
    Reply(ReplyArgs),
    /// Show the membership a producer sees: every member, its state, group, capacity and load.
    Members(MembersArgs),
    /// Measure direct and datagram delivery against bare TCP and UDP ping-pong on loopback.
    Bench(bench::BenchArgs),
}

/// Options of `herald peer members`.
#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    #[command(flatten)]
    pub discovery: Discovery,
    #[command(flatten)]
    pub security: Security,
    /// How long to collect: static peers are done once each was tried; mDNS takes the whole time.
    #[arg(long, default_value_t = 2_000)]
    pub wait_ms: u64,
}

/// Where producers find members.
#[derive(Debug, Clone, clap::Args)]
pub struct Discovery {
    /// Members' addresses (HOST:PORT, comma separated).
    #[arg(long, value_delimiter = ',', required_unless_present = "mdns")]
    pub peers: Vec<String>,
    /// Discover members with mDNS-SD (`_herald._tcp.local.`).
    #[arg(long)]
    pub mdns: bool,
}

/// Security of brokerless connections (`docs/direct-protocol.md`): TLS with certificates from
/// one CA, a group key, a topic key for datagrams. Keys are read from files, never given here.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Security {
    /// CA bundle (PEM) the other side's certificate must chain to; turns TLS on.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This side's certificate chain (PEM).
    #[arg(long, requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// This side's private key (PEM).
    #[arg(long, requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
    /// Producers: a name the member's certificate must be valid for (otherwise only its chain
    /// to the CA is checked).
    #[arg(long, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// File holding the group key (64 hexadecimal digits): both sides prove they hold it.
    #[arg(long)]
    pub group_key_file: Option<PathBuf>,
    /// File holding the topic's datagram key (64 hexadecimal digits): datagrams are sealed and
    /// checked with it.
    #[arg(long)]
    pub topic_key_file: Option<PathBuf>,
    /// Encrypt sealed datagrams, not only authenticate them (needs --topic-key-file).
    #[arg(long, requires = "topic_key_file")]
    pub encrypt: bool,
}

impl Security {
    fn tls_files(&self) -> Option<TlsFiles> {
        self.tls_ca.as_ref().map(|ca| TlsFiles {
            ca: ca.clone(),
            certificate: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        })
    }

    fn group_key(&self) -> Result<Option<GroupKey>, CliError> {
        self.group_key_file
            .as_ref()
            .map(|path| Ok(GroupKey::new(&SecretKey::from_file(path).map_err(usage)?)))
            .transpose()
    }

    fn topic_key(&self) -> Result<Option<DatagramKey>, CliError> {
        self.topic_key_file
            .as_ref()
            .map(|path| {
                Ok(DatagramKey::new(
                    &SecretKey::from_file(path).map_err(usage)?,
                ))
            })
            .transpose()
    }

    fn apply_publisher(&self, topic: &str, config: &mut PublisherConfig) -> Result<(), CliError> {
        if let Some(files) = self.tls_files() {
            config.tls =
                Some(PublisherTls::load(&files, self.tls_server_name.as_deref()).map_err(usage)?);
        }
        config.group_key = self.group_key()?;
        if let Some(key) = self.topic_key()? {
            config.datagram_keys.insert(
                topic.to_string(),
                DatagramSeal {
                    key,
                    encrypt: self.encrypt,
                },
            );
        }
        Ok(())
    }

    fn apply_member(&self, config: &mut MemberConfig) -> Result<(), CliError> {
        if let Some(files) = self.tls_files() {
            config.tls = Some(MemberTls::load(&files).map_err(usage)?);
        }
        config.group_key = self.group_key()?;
        config.datagram_keys = self.topic_key()?.into_iter().collect();
        Ok(())
    }
}

fn usage(error: impl std::fmt::Display) -> CliError {
    CliError::Usage(error.to_string())
}

/// Options of `herald peer listen`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Topic to serve, publish to or ask.
    #[arg(long)]
    pub topic: String,
    /// Group this member belongs to; each event goes to one member of every group.
    #[arg(long)]
    pub group: String,
    /// TCP and UDP address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "0.0.0.0:7400")]
    pub bind: String,
    /// Events handled at once; producers never send more.
    #[arg(long, default_value_t = 64)]
    pub capacity: u32,
    /// Announce this member with mDNS-SD.
    #[arg(long)]
    pub mdns: bool,
    /// Pretend each event takes this long to handle (to try flow control).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Discard every Nth received datagram before counting it (tests loss accounting).
    #[arg(long, hide = true)]
    pub drop_every: Option<u64>,
    #[command(flatten)]
    pub security: Security,
}

/// Delivery mode of `herald peer publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishMode {
    /// TCP; each event acknowledged by one member of every group.
    Direct,
    /// UDP; sent once, loss counted by receivers.
    Datagram,
}

/// Options of `herald peer publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Topic to serve, publish to or ask.
    #[arg(long)]
    pub topic: String,
    #[command(flatten)]
    pub discovery: Discovery,
    #[command(flatten)]
    pub security: Security,
    #[arg(long, value_enum, default_value_t = PublishMode::Direct)]
    pub mode: PublishMode,
    /// Key of every event.
    #[arg(long)]
    pub key: Option<String>,
    /// Deadline of each direct event, and how long to wait for members at start.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// Direct events awaiting their ack at once (pipelining).
    #[arg(long, default_value_t = 128, alias = "in-flight")]
    pub in_flight_max: usize,
    /// Events per second (0: as fast as acks or the socket allow).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Skip every Nth datagram per member, using up its sequence number (tests loss accounting).
    #[arg(long, hide = true)]
    pub drop_every: Option<u64>,
}

/// Options of `herald peer request`.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// Topic to serve, publish to or ask.
    #[arg(long)]
    pub topic: String,
    #[command(flatten)]
    pub discovery: Discovery,
    #[command(flatten)]
    pub security: Security,
    /// Deadline of the request; an inherited deadline (HERALD_DEADLINE_UNIX_MS) wins if earlier.
    #[arg(long)]
    pub timeout_ms: u64,
    /// The request payload.
    pub value: String,
}

/// Options of `herald peer reply`.
#[derive(Debug, clap::Args)]
pub struct ReplyArgs {
    /// Topic to serve, publish to or ask.
    #[arg(long)]
    pub topic: String,
    /// Group this member belongs to; each event goes to one member of every group.
    #[arg(long)]
    pub group: String,
    /// TCP (and UDP) address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "0.0.0.0:7400")]
    pub bind: String,
    /// Shell command run per request (`sh -c`): the request on stdin, the response from stdout.
    /// It gets the deadline in HERALD_DEADLINE_UNIX_MS and is killed when the deadline passes.
    #[arg(long)]
    pub command: String,
    /// Requests handled at once; producers never send more.
    #[arg(long, default_value_t = 16)]
    pub capacity: u32,
    /// Announce this member with mDNS-SD.
    #[arg(long)]
    pub mdns: bool,
    #[command(flatten)]
    pub security: Security,
}

/// Runs a `herald peer` command.
pub fn run(global: &Global, command: PeerCommand) -> Result<(), CliError> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match command {
        PeerCommand::Listen(args) => runtime.block_on(listen(global.output, args)),
        PeerCommand::Publish(args) => runtime.block_on(publish(global.output, args)),
        PeerCommand::Request(args) => runtime.block_on(request(args)),
        PeerCommand::Reply(args) => runtime.block_on(reply(global.output, args)),
        PeerCommand::Members(args) => runtime.block_on(members(global.output, args)),
        PeerCommand::Bench(args) => {
            drop(runtime);
            bench::run(global.output, args)
        }
    }
}

/// Logs to stderr as `HERALD_LOG` says (a malformed or absent filter means the default: warnings,
/// and what direct delivery reports at info level).
fn init_logging() {
    let filter = std::env::var("HERALD_LOG")
        .ok()
        .and_then(|text| log_filter(&text).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn,herald_direct=info"));
    // A subscriber installed already (there is none in the binary) keeps logging instead.
    let _ = process::init_logging(filter, LogFormat::Human);
}

fn parse_addr(text: &str) -> Result<SocketAddr, CliError> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| CliError::Usage(format!("not a HOST:PORT address: {text:?}")))
}

fn publisher_config(
    discovery: &Discovery,
    security: &Security,
    topic: &str,
) -> Result<PublisherConfig, CliError> {
    let peers = discovery
        .peers
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| parse_addr(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = PublisherConfig::new(peers);
    config.mdns = discovery.mdns;
    security.apply_publisher(topic, &mut config)?;
    Ok(config)
}

/// One handled event as `listen` prints it in JSON.
#[derive(Serialize)]
struct EventLine<'a> {
    id: String,
    topic: &'a str,
    key: Option<String>,
    value: String,
    headers: BTreeMap<&'a str, String>,
    mode: &'static str,
    publisher: String,
    seq: u64,
}

fn print_event(output: Output, e: &Received) {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let line = match output {
        Output::Json => {
            let line = EventLine {
                id: uuid::Uuid::from_u128(e.id).to_string(),
                topic: &e.topic,
                key: e.key.as_ref().map(text),
                value: text(&e.value),
                headers: e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), text(v)))
                    .collect(),
                mode: e.mode.as_str(),
                publisher: uuid::Uuid::from_u128(e.publisher).to_string(),
                seq: e.seq,
            };
            serde_json::to_string(&line).unwrap_or_default()
        }
        Output::Table => format!(
            "{:<8} {} seq={} key={} {}",
            e.mode.as_str(),
            uuid::Uuid::from_u128(e.id),
            e.seq,
            e.key.as_ref().map(text).unwrap_or_else(|| "-".into()),
            text(&e.value)
        ),
    };
    // Written and flushed before the handler returns (and so before the ack), so a line is never
    // lost for an acknowledged event even if the process is killed right after.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct PrintHandler {
    output: Output,
    delay: Duration,
}

impl Handler for PrintHandler {
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), HandlerError>> {
        let (output, delay) = (self.output, self.delay);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            print_event(output, &event);
            Ok(())
        })
    }
}

/// What `listen` and `reply` start a member with.
struct MemberSetup<'a> {
    topic: &'a str,
    group: &'a str,
    bind: &'a str,
    capacity: u32,
    mdns: bool,
    drop_every: Option<u64>,
    security: &'a Security,
}

async fn start_member(
    setup: MemberSetup<'_>,
    handler: Arc<dyn Handler>,
) -> Result<Member, CliError> {
    let MemberSetup {
        topic,
        group,
        bind,
        capacity,
        mdns,
        drop_every,
        security,
    } = setup;
    let mut config = MemberConfig::new(topic, group, parse_addr(bind)?);
    config.capacity = capacity;
    config.mdns = mdns;
    config.drop_every_nth_datagram = drop_every;
    security.apply_member(&mut config)?;
    let member = Member::start(config, handler).await.map_err(|e| match e {
        herald_direct::MemberStartError::Config(m) => CliError::Usage(m),
        other => CliError::Other(other.into()),
    })?;
    // Scripts and tests wait for this line to know the member is ready and where it listens.
    eprintln!(
        "listening on {} (tcp+udp) topic {topic} group {group} capacity {capacity}",
        member.local_addr()
    );
    Ok(member)
}

#[derive(Serialize)]
struct ListenSummary {
    summary: bool,
    received: u64,
    lost: u64,
    direct: u64,
    datagrams: u64,
    requests: u64,
    duplicates: u64,
    handler_failures: u64,
    in_flight_max: u32,
    /// Datagrams refused because they could not be authenticated (topic key).
    datagrams_rejected: u64,
    /// Authentic datagrams refused as replays.
    datagrams_replayed: u64,
    /// Producer connections refused by the TLS or group-key handshake.
    auth_failures: u64,
    /// Datagram counts per publisher.
    publishers: Vec<herald_direct::PublisherLoss>,
}

async fn listen(output: Output, args: ListenArgs) -> Result<(), CliError> {
    let handler = Arc::new(PrintHandler {
        output,
        delay: Duration::from_millis(args.delay_ms),
    });
    // Signal handlers go in first, so a SIGTERM while the member starts is not the default
    // "die now" (which would skip its goodbye and the summary).
    let stop = stop_signal().context("installing signal handlers")?;
    let member = start_member(
        MemberSetup {
            topic: &args.topic,
            group: &args.group,
            bind: &args.bind,
            capacity: args.capacity,
            mdns: args.mdns,
            drop_every: args.drop_every,
            security: &args.security,
        },
        handler,
    )
    .await?;
    stop.await;
    let publishers = member.datagram_publishers();
    let stats = member.shutdown().await;
    print_listen_summary(output, stats, publishers);
    Ok(())
}

fn print_listen_summary(
    output: Output,
    stats: herald_direct::MemberStats,
    publishers: Vec<herald_direct::PublisherLoss>,
) {
    let summary = ListenSummary {
        summary: true,
        received: stats.direct_handled + stats.datagrams_received + stats.requests_answered,
        lost: stats.datagrams_lost,
        direct: stats.direct_handled,
        datagrams: stats.datagrams_received,
        requests: stats.requests_answered,
        duplicates: stats.duplicates_dropped,
        handler_failures: stats.handler_failures,
        in_flight_max: stats.in_flight_max,
        datagrams_rejected: stats.datagrams_rejected,
        datagrams_replayed: stats.datagrams_replayed,
        auth_failures: stats.auth_failures,
        publishers,
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string(&summary).unwrap_or_default()),
        Output::Table => println!(
            "received {} lost {} (direct {}, datagrams {}, requests {}, duplicates dropped {}, handler failures {}, max in flight {})",
            summary.received,
            summary.lost,
            summary.direct,
            summary.datagrams,
            summary.requests,
            summary.duplicates,
            summary.handler_failures,
            summary.in_flight_max
        ),
    }
    if output == Output::Table
        && summary.datagrams_rejected + summary.datagrams_replayed + summary.auth_failures > 0
    {
        println!(
            "refused: datagrams rejected {} replayed {}, connections failing authentication {}",
            summary.datagrams_rejected, summary.datagrams_replayed, summary.auth_failures
        );
    }
    if output == Output::Table {
        for p in &summary.publishers {
            println!(
                "  publisher {} received {} lost {} duplicates {}",
                p.publisher, p.received, p.lost, p.duplicates
            );
        }
    }
}

#[derive(Serialize, Default)]
struct PublishSummary {
    mode: &'static str,
    sent: u64,
    acked: u64,
    failed: u64,
}

async fn publish(output: Output, args: PublishArgs) -> Result<(), CliError> {
    let mut config = publisher_config(&args.discovery, &args.security, &args.topic)?;
    config.drop_every_nth_datagram = args.drop_every;
    let publisher = Publisher::start(config)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let timeout = Duration::from_millis(args.timeout_ms);
    if !publisher.wait_for_topic(&args.topic, timeout).await {
        return Err(CliError::Unreachable(format!(
            "no member serving topic {:?} was reachable within {} ms",
            args.topic, args.timeout_ms
        )));
    }
    // stdin is read on a blocking thread and handed over through a bounded channel.
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(1024);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let window = Arc::new(tokio::sync::Semaphore::new(args.in_flight_max.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let started = tokio::time::Instant::now();
    let mut index = 0u64;
    while let Some(line) = line_rx.recv().await {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(index as f64 / args.rate as f64);
            tokio::time::sleep_until(due).await;
        }
        index += 1;
        if line.len() > LINE_BYTES_MAX {
            eprintln!("error: line {index} longer than {LINE_BYTES_MAX} bytes; skipped");
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut message = Message::new(args.topic.clone(), line);
        if let Some(key) = &args.key {
            message = message.with_key(key.clone());
        }
        match args.mode {
            PublishMode::Datagram => match publisher.send_datagram(message).await {
                Ok(_) => {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    if matches!(error, DatagramError::TooLarge { .. }) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("error: line {index}: {error}");
                    }
                }
            },
            PublishMode::Direct => {
                let permit = window
                    .clone()
                    .acquire_owned()
                    .await
                    .context("publish window closed")?;
                sent.fetch_add(1, Ordering::Relaxed);
                let (p, acked, failed, refused) = (
                    publisher.clone(),
                    acked.clone(),
                    failed.clone(),
                    refused.clone(),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    match p.publish(message, timeout).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            if matches!(
                                error,
                                PublishError::TooLarge { .. } | PublishError::Invalid(_)
                            ) {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                                eprintln!("error: line {index}: {error}");
                            }
                        }
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let summary = PublishSummary {
        mode: match args.mode {
            PublishMode::Direct => "direct",
            PublishMode::Datagram => "datagram",
        },
        sent: sent.load(Ordering::Relaxed),
        acked: acked.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string(&summary).unwrap_or_default()),
        Output::Table => println!(
            "sent {} acked {} failed {}",
            summary.sent, summary.acked, summary.failed
        ),
    }
    if summary.failed > 0 {
        let message = format!("{} of {} events failed", summary.failed, index);
        if refused.load(Ordering::Relaxed) == summary.failed {
            return Err(CliError::Refused(message));
        }
        return Err(CliError::NotAcknowledged(message));
    }
    Ok(())
}

async fn members(output: Output, args: MembersArgs) -> Result<(), CliError> {
    let publisher = Publisher::start(publisher_config(&args.discovery, &args.security, "")?)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let wait = Duration::from_millis(args.wait_ms);
    if args.discovery.mdns {
        tokio::time::sleep(wait).await;
    } else {
        publisher.wait_settled(wait).await;
    }
    let view = publisher.members();
    match output {
        Output::Json => crate::output::print_json(&view, false).context("printing JSON")?,
        Output::Table => {
            let rows: Vec<Vec<String>> = view
                .iter()
                .map(|m| {
                    let state = serde_json::to_value(m.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    vec![
                        m.addr.to_string(),
                        state,
                        m.topic.clone().unwrap_or_else(|| "-".into()),
                        m.group.clone().unwrap_or_else(|| "-".into()),
                        m.capacity.to_string(),
                        m.in_flight.to_string(),
                        format!("{:?}", m.source).to_lowercase(),
                        m.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            crate::output::print_table(
                &[
                    "ADDRESS",
                    "STATE",
                    "TOPIC",
                    "GROUP",
                    "CAPACITY",
                    "IN FLIGHT",
                    "SOURCE",
                    "LAST ERROR",
                ],
                &rows,
            );
        }
    }
    if view
        .iter()
        .any(|m| m.state == herald_direct::MemberState::Up)
    {
        Ok(())
    } else {
        Err(CliError::Unreachable("no member is reachable".into()))
    }
}

fn inherited_deadline() -> Option<SystemTime> {
    let ms: u64 = std::env::var(DEADLINE_ENV).ok()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

async fn request(args: RequestArgs) -> Result<(), CliError> {
    let mut deadline = SystemTime::now() + Duration::from_millis(args.timeout_ms);
    if let Some(inherited) = inherited_deadline() {
        deadline = deadline.min(inherited);
    }
    let publisher = Publisher::start(publisher_config(
        &args.discovery,
        &args.security,
        &args.topic,
    )?)
    .await
    .map_err(|e| CliError::Other(e.into()))?;
    let response = publisher
        .request_until(Message::new(args.topic.clone(), args.value), deadline)
        .await
        .map_err(|e| match e {
            RequestError::DeadlineExceeded => CliError::TimedOut(format!(
                "request on topic {:?}: deadline exceeded",
                args.topic
            )),
            RequestError::NoLiveMember { .. } => CliError::Unreachable(e.to_string()),
            RequestError::BackPressure { .. }
            | RequestError::TooLarge { .. }
            | RequestError::Invalid(_) => CliError::Refused(e.to_string()),
            other => CliError::Other(anyhow::anyhow!("{other}")),
        })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&response)?;
    if !response.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the `reply --command` for each request and direct event.
struct CommandHandler {
    command: String,
    output: Output,
}

impl CommandHandler {
    async fn run(
        command: String,
        input: Bytes,
        deadline: Option<SystemTime>,
    ) -> Result<Bytes, HandlerError> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Dropping the future at the deadline kills the command: the chain stops there.
            .kill_on_drop(true);
        if let Some(deadline) = deadline {
            cmd.env(
                DEADLINE_ENV,
                herald_direct::event::system_to_unix_ms(deadline).to_string(),
            );
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| HandlerError::failed(format!("cannot run {command:?}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&input).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| HandlerError::failed(format!("waiting for {command:?}: {e}")))?;
        if out.status.success() {
            Ok(Bytes::from(out.stdout))
        } else {
            Err(HandlerError::failed(format!(
                "command failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

impl Handler for CommandHandler {
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), HandlerError>> {
        let (command, output) = (self.command.clone(), self.output);
        Box::pin(async move {
            print_event(output, &event);
            Self::run(command, event.value.clone(), event.deadline)
                .await
                .map(|_| ())
        })
    }

    fn on_request(
        &self,
        request: Received,
        ctx: RequestContext,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        let (command, output) = (self.command.clone(), self.output);
        Box::pin(async move {
            print_event(output, &request);
            let result = Self::run(command, request.value.clone(), Some(ctx.deadline())).await;
            if let Err(error) = &result {
                eprintln!(
                    "request {} failed: {error}",
                    uuid::Uuid::from_u128(request.id)
                );
            }
            result
        })
    }
}

async fn reply(output: Output, args: ReplyArgs) -> Result<(), CliError> {
    let handler = Arc::new(CommandHandler {
        command: args.command.clone(),
        output,
    });
    // Signal handlers go in first, so a SIGTERM while the member starts is not the default
    // "die now" (which would skip its goodbye and the summary).
    let stop = stop_signal().context("installing signal handlers")?;
    let member = start_member(
        MemberSetup {
            topic: &args.topic,
            group: &args.group,
            bind: &args.bind,
            capacity: args.capacity,
            mdns: args.mdns,
            drop_every: None,
            security: &args.security,
        },
        handler,
    )
    .await?;
    stop.await;
    let publishers = member.datagram_publishers();
    let stats = member.shutdown().await;
    print_listen_summary(output, stats, publishers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use herald_direct::Mode;

    /// Scripts written before the flags took the `-max` spelling keep working.
    #[test]
    fn the_old_in_flight_flags_still_parse() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Peer {
            #[command(subcommand)]
            command: super::PeerCommand,
        }
        let publish = ["peer", "publish", "--topic", "t", "--peers", "127.0.0.1:1"];
        for flag in ["--in-flight", "--in-flight-max"] {
            let args = publish.iter().copied().chain([flag, "3"]);
            match Peer::try_parse_from(args).map(|p| p.command) {
                Ok(super::PeerCommand::Publish(args)) => assert_eq!(args.in_flight_max, 3),
                other => panic!("{flag}: {:?}", other.map(|_| ()).err()),
            }
            match Peer::try_parse_from(["peer", "bench", flag, "3"]).map(|p| p.command) {
                Ok(super::PeerCommand::Bench(args)) => assert_eq!(args.in_flight_max, 3),
                other => panic!("{flag}: {:?}", other.map(|_| ()).err()),
            }
        }
    }

    #[test]
    fn mode_names_match_the_json_keys() {
        assert_eq!(Mode::Direct.as_str(), "direct");
        assert_eq!(Mode::Datagram.as_str(), "datagram");
    }
}
