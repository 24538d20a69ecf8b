//! A synchronous chain over direct delivery, like the joints of a robot arm: a command asks the
//! base to move, the base does its part and passes the move to the shoulder, then the elbow,
//! then the wrist. Each joint is a group of members (`--members`), each its own bus serving the
//! joint's topic (its own process in a real arm).
//!
//! Two ways to chain them, to compare:
//! - `--mode requests`: nested requests under the command's one deadline. Every joint holds its
//!   request open until the joints after it answered, so a slow joint keeps every joint before
//!   it waiting, and the first caller's deadline decides when they all give up.
//! - `--mode events`: each joint hands the move to the next with a direct publish, done once the
//!   next joint acknowledged it after doing its own part. Each hop is opened and closed on its own
//!   with its own timeout (`--hop-timeout-ms` per member tried), so only the hop into a slow joint
//!   waits, and it fails over to another member of that joint's group; the joints before it are
//!   free already.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use herald::{Bus, DeadLetter, Event, HandlerError, RequestError, RetryPolicy, Subscription};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The joints from the command's end of the chain to the tip.
const JOINTS: [&str; 4] = ["base", "shoulder", "elbow", "wrist"];
const MOVES_MAX: u32 = 10_000;
const MEMBERS_MAX: usize = 16;
/// Exit status when at least one move failed.
const EXIT_MOVE_FAILED: i32 = 2;
/// In events mode, the header carrying a hop's deadline (Unix ms), after which the joint that
/// received it drops its part: its sender has given up on it by then.
const HOP_DEADLINE_HEADER: &str = "arm-hop-deadline-unix-ms";
/// Longest the command waits for the wrist in events mode; every hop fails well before this.
const MOVE_WAIT_MAX: Duration = Duration::from_secs(300);

#[derive(Parser, Debug)]
#[command(
    about = "A robot arm's joints as a chain: nested requests under one deadline, or \
                   hop-by-hop direct events."
)]
struct Args {
    /// How a joint passes a move to the next.
    #[arg(long, value_enum, default_value_t = Mode::Requests)]
    mode: Mode,
    /// Moves the command issues, one after the other.
    #[arg(long, default_value_t = 3)]
    moves: u32,
    /// Members of each joint's group; a move goes to one of them, another if it fails.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Requests mode: time each move may take through the whole chain, in milliseconds.
    #[arg(long, default_value_t = 500)]
    deadline_ms: u64,
    /// Events mode: time each member tried may take to acknowledge a hop, in milliseconds.
    #[arg(long, default_value_t = 200)]
    hop_timeout_ms: u64,
    /// Time each joint takes for its part of a move, in milliseconds.
    #[arg(long, default_value_t = 20)]
    stage_ms: u64,
    /// Make the first member of this joint slow (base, shoulder, elbow or wrist).
    #[arg(long)]
    slow_stage: Option<String>,
    /// How long the slow member takes, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    slow_ms: u64,
    /// Find the joints with mDNS instead of handing each one the next one's addresses.
    #[arg(long)]
    mdns: bool,
    /// The address the joints listen on (any free port each).
    #[arg(long, default_value = "127.0.0.1")]
    listen_ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Requests,
    Events,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.moves == 0 || args.moves > MOVES_MAX {
        bail!("--moves must be 1 to {MOVES_MAX}");
    }
    if args.members == 0 || args.members > MEMBERS_MAX {
        bail!("--members must be 1 to {MEMBERS_MAX}");
    }
    if let Some(slow) = &args.slow_stage
        && !JOINTS.contains(&slow.as_str())
    {
        bail!("--slow-stage must be one of {}", JOINTS.join(", "));
    }
    let completed = run(&args).await?;
    println!("{completed} of {} moves completed", args.moves);
    if completed < args.moves {
        std::process::exit(EXIT_MOVE_FAILED);
    }
    Ok(())
}

fn topic(joint: &str) -> String {
    format!("arm.{joint}")
}

/// What a span of time in a move was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A joint member held the move open: from receiving it to answering (requests) or
    /// acknowledging it (events).
    Held,
    /// A joint member did its own part.
    Worked,
    /// Events mode: a hop from one joint to the next, from publish to acknowledgement.
    Hop,
}

#[derive(Debug, Clone)]
struct Span {
    move_n: u32,
    kind: Kind,
    /// `elbow#2` (or `elbow` with one member per joint), or `shoulder>elbow` for a hop.
    label: String,
    start: Instant,
    end: Option<Instant>,
    /// Ended without finishing (deadline or hop timeout).
    abandoned: bool,
}

/// Everything the joints did, move by move, to report what was open when.
#[derive(Clone, Default)]
struct Trace {
    spans: Arc<Mutex<Vec<Span>>>,
    /// Events mode: how each move ended, awaited by the command.
    endings: Arc<Mutex<HashMap<u32, Ending>>>,
}

/// Tells the command how a move ended in events mode: the wrist finished, or a hop failed.
type Ending = oneshot::Sender<Result<(), String>>;

impl Trace {
    fn open(&self, move_n: u32, kind: Kind, label: &str) -> Open {
        let mut spans = self.spans.lock();
        spans.push(Span {
            move_n,
            kind,
            label: label.to_string(),
            start: Instant::now(),
            end: None,
            abandoned: false,
        });
        Open {
            trace: self.clone(),
            index: spans.len() - 1,
            done: false,
        }
    }

    fn expect_ending(&self, move_n: u32) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.endings.lock().insert(move_n, tx);
        rx
    }

    fn end_move(&self, move_n: u32, outcome: Result<(), String>) {
        if let Some(tx) = self.endings.lock().remove(&move_n) {
            let _ = tx.send(outcome);
        }
    }

    fn of_move(&self, move_n: u32) -> Vec<Span> {
        self.spans
            .lock()
            .iter()
            .filter(|s| s.move_n == move_n)
            .cloned()
            .collect()
    }
}

/// An open span; dropped without [`Open::close`] it ends as abandoned (the future holding it was
/// dropped at the deadline, or gave up).
struct Open {
    trace: Trace,
    index: usize,
    done: bool,
}

impl Open {
    fn close(mut self) {
        self.done = true;
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut spans = self.trace.spans.lock();
        if let Some(span) = spans.get_mut(self.index) {
            span.end = Some(Instant::now());
            span.abandoned = !self.done;
            if span.abandoned && span.kind == Kind::Worked {
                println!("{}: abandoned move {}", span.label, span.move_n);
            }
        }
    }
}

/// One joint member's settings.
#[derive(Clone)]
struct Joint {
    /// Index in [`JOINTS`].
    index: usize,
    label: String,
    work: Duration,
    hop_timeout: Duration,
    /// Members of the next joint: a hop may try each once.
    next_members: u32,
    trace: Trace,
}

impl Joint {
    fn name(&self) -> &'static str {
        JOINTS[self.index]
    }

    fn next(&self) -> Option<&'static str> {
        JOINTS.get(self.index + 1).copied()
    }
}

/// Starts the joints (tip first, so each can be handed the next one's addresses), runs the moves,
/// stops the joints; returns how many moves completed.
async fn run(args: &Args) -> anyhow::Result<u32> {
    let trace = Trace::default();
    let hop_timeout = Duration::from_millis(args.hop_timeout_ms);
    let mut joints: Vec<Subscription> = Vec::with_capacity(JOINTS.len() * args.members);
    let mut next_addrs: Vec<SocketAddr> = Vec::new();
    for (index, name) in JOINTS.iter().enumerate().rev() {
        let mut addrs = Vec::with_capacity(args.members);
        for m in 1..=args.members {
            let slow = args.slow_stage.as_deref() == Some(*name) && m == 1;
            let joint = Joint {
                index,
                label: if args.members == 1 {
                    name.to_string()
                } else {
                    format!("{name}#{m}")
                },
                work: Duration::from_millis(if slow { args.slow_ms } else { args.stage_ms }),
                hop_timeout,
                next_members: u32::try_from(args.members).unwrap_or(1),
                trace: trace.clone(),
            };
            let bus = connect(args, &next_addrs).await?;
            let listen = SocketAddr::new(args.listen_ip, 0);
            let sub = match args.mode {
                Mode::Requests => serve_requests(&bus, joint, listen).await,
                Mode::Events => serve_events(&bus, joint, listen).await,
            }
            .with_context(|| format!("starting the {name}"))?;
            addrs.extend(sub.local_addr());
            joints.push(sub);
        }
        next_addrs = addrs;
    }
    let command = connect(args, &next_addrs).await?;
    let mut completed = 0;
    for n in 1..=args.moves {
        let started = Instant::now();
        let outcome = match args.mode {
            Mode::Requests => {
                let result = command
                    .request(&topic(JOINTS[0]), Event::new(n.to_string()))
                    .deadline(Duration::from_millis(args.deadline_ms))
                    .await;
                let returned = Instant::now();
                match result {
                    Ok(_) => Ok(returned),
                    Err(RequestError::DeadlineExceeded) => {
                        Err("deadline exceeded, the whole chain gave up".to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Mode::Events => {
                let ending = trace.expect_ending(n);
                let sent = hand_off(
                    &command,
                    &trace,
                    n,
                    "command",
                    JOINTS[0],
                    hop_timeout,
                    args.members,
                )
                .await;
                let returned = Instant::now();
                match sent {
                    Err(e) => Err(e),
                    Ok(()) => match tokio::time::timeout(MOVE_WAIT_MAX, ending).await {
                        Ok(Ok(Ok(()))) => Ok(returned),
                        Ok(Ok(Err(e))) => Err(e),
                        Ok(Err(_)) | Err(_) => Err("the move never reached the wrist".to_string()),
                    },
                }
            }
        };
        let ms = |at: Instant| at.duration_since(started).as_secs_f64() * 1000.0;
        match outcome {
            Ok(returned) => {
                completed += 1;
                let spans = trace.of_move(n);
                let wrist = spans
                    .iter()
                    .filter(|s| {
                        s.kind == Kind::Worked && !s.abandoned && s.label.starts_with("wrist")
                    })
                    .filter_map(|s| s.end)
                    .max()
                    .unwrap_or(returned);
                println!(
                    "move {n}: done: {}; command returned after {:.1} ms, wrist finished after {:.1} ms; {}",
                    path(&spans),
                    ms(returned),
                    ms(wrist),
                    open_meanwhile(&spans, args.slow_stage.as_deref(), wrist.max(returned)),
                );
            }
            Err(e) => {
                let failed = Instant::now();
                let spans = trace.of_move(n);
                println!(
                    "move {n}: failed after {:.0} ms: {e}; {}",
                    ms(failed),
                    open_meanwhile(&spans, args.slow_stage.as_deref(), failed),
                );
            }
        }
    }
    // Stopping a joint waits for its work in flight, so every joint has reported by now.
    for sub in joints {
        sub.shutdown().await?;
    }
    Ok(completed)
}

/// The members that did their part, in order, and the members tried first that did not answer
/// in time (abandoned, or still at it when the move ended).
fn path(spans: &[Span]) -> String {
    let mut worked: Vec<&Span> = spans.iter().filter(|s| s.kind == Kind::Worked).collect();
    worked.sort_by_key(|s| s.start);
    let finished = |s: &Span| s.end.is_some() && !s.abandoned;
    let mut out: Vec<String> = Vec::new();
    for joint in JOINTS {
        let tries: Vec<&Span> = worked
            .iter()
            .copied()
            .filter(|s| joint_of(&s.label) == joint)
            .collect();
        let Some(done) = tries.iter().find(|s| finished(s)) else {
            continue;
        };
        let missed: Vec<&str> = tries
            .iter()
            .filter(|s| !finished(s))
            .map(|s| s.label.as_str())
            .collect();
        if missed.is_empty() {
            out.push(done.label.clone());
        } else {
            out.push(format!(
                "{} (after {} did not answer in time)",
                done.label,
                missed.join(", ")
            ));
        }
    }
    out.join(" > ")
}

fn joint_of(label: &str) -> &str {
    label.split('#').next().unwrap_or(label)
}

/// Which joints and hops held the move open while its slowest part worked (the slow joint's
/// longest part if it had one in this move, else the wrist's), looked at halfway through that
/// part (or through what of it came before `until`, the move's end), so that an acknowledgement
/// still on its way at the very start or end does not count.
fn open_meanwhile(spans: &[Span], slow: Option<&str>, until: Instant) -> String {
    let end = |s: &Span| s.end.unwrap_or(until).min(until);
    let of = |joint: &str| {
        spans
            .iter()
            .filter(move |s| s.kind == Kind::Worked && joint_of(&s.label) == joint)
            .max_by_key(|s| end(s).saturating_duration_since(s.start))
    };
    let Some(focus) = slow.and_then(of).or_else(|| of("wrist")) else {
        return "nothing traced".to_string();
    };
    let at = focus.start + end(focus).saturating_duration_since(focus.start) / 2;
    let mut open: Vec<String> = Vec::new();
    for s in spans {
        let open_at = s.start <= at && s.end.is_none_or(|e| e > at);
        if s.kind == Kind::Worked || s.label == focus.label || !open_at {
            continue;
        }
        let name = match s.kind {
            Kind::Hop => format!("hop {}", s.label),
            _ => s.label.clone(),
        };
        if !open.contains(&name) {
            open.push(name);
        }
    }
    let list = if open.is_empty() {
        "nothing else".to_string()
    } else {
        open.join(", ")
    };
    format!("open while {} worked: {list}", focus.label)
}

async fn connect(args: &Args, peers: &[SocketAddr]) -> anyhow::Result<Bus> {
    let mut builder = Bus::builder().direct();
    if args.mdns {
        builder = builder.mdns(true);
    } else {
        builder = builder.peers(peers.iter().copied());
    }
    if args.mode == Mode::Events {
        // A member that does not acknowledge within the hop timeout is given up on, and the
        // event goes to another member of its group.
        builder = builder.option("attempt_timeout_ms", args.hop_timeout_ms.to_string());
    }
    Ok(builder.connect().await?)
}

fn move_number(event: &Event) -> Result<u32, HandlerError> {
    String::from_utf8_lossy(&event.payload)
        .parse()
        .map_err(|_| HandlerError::permanent("the payload is not a move number"))
}

/// Requests mode: does its part of the move, then asks the next joint within the same deadline
/// and answers once it answered.
async fn serve_requests(
    bus: &Bus,
    joint: Joint,
    listen: SocketAddr,
) -> Result<Subscription, herald::SubscribeError> {
    bus.serve(&topic(joint.name()))
        .bind(listen)
        .reply(move |request: Event, ctx| {
            let joint = joint.clone();
            async move {
                let n = move_number(&request)?;
                let held = joint.trace.open(n, Kind::Held, &joint.label);
                let worked = joint.trace.open(n, Kind::Worked, &joint.label);
                tokio::time::sleep(joint.work).await;
                worked.close();
                if let Some(next) = joint.next() {
                    // The nested request inherits the caller's deadline through `ctx`.
                    ctx.request(&topic(next), Event::new(n.to_string()))
                        .await
                        .map_err(|e| HandlerError::retryable(format!("{}: {e}", joint.label)))?;
                }
                held.close();
                Ok(Event::new(joint.label.clone()))
            }
        })
        .await
}

/// Events mode: does its part of the move within the hop's deadline, acknowledges it, and hands
/// the move on to the next joint in a hop of its own.
async fn serve_events(
    bus: &Bus,
    joint: Joint,
    listen: SocketAddr,
) -> Result<Subscription, herald::SubscribeError> {
    let sender = bus.clone();
    bus.subscribe(&topic(joint.name()))
        .group(joint.name())
        .bind(listen)
        // A failure goes back to the previous joint at once, which tries another member.
        .retry(RetryPolicy::none())
        .dead_letter(DeadLetter::Default)
        .handle(move |event: Event| {
            let joint = joint.clone();
            let sender = sender.clone();
            async move {
                let n = move_number(&event)?;
                let deadline = event
                    .header_str(HOP_DEADLINE_HEADER)
                    .and_then(|ms| ms.parse().ok())
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                    .unwrap_or_else(SystemTime::now);
                let left = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let held = joint.trace.open(n, Kind::Held, &joint.label);
                let worked = joint.trace.open(n, Kind::Worked, &joint.label);
                if tokio::time::timeout(left, tokio::time::sleep(joint.work))
                    .await
                    .is_err()
                {
                    // The sender gave up on this member and went to another one: drop the part.
                    return Err(HandlerError::permanent(format!(
                        "{}: the hop's timeout passed",
                        joint.label
                    )));
                }
                worked.close();
                match joint.next() {
                    Some(next) => {
                        let (trace, from) = (joint.trace.clone(), joint.name());
                        let (timeout, members) = (joint.hop_timeout, joint.next_members);
                        tokio::spawn(async move {
                            let members = usize::try_from(members).unwrap_or(1);
                            if let Err(e) =
                                hand_off(&sender, &trace, n, from, next, timeout, members).await
                            {
                                trace.end_move(n, Err(e));
                            }
                        });
                    }
                    None => joint.trace.end_move(n, Ok(())),
                }
                held.close();
                Ok(())
            }
        })
        .await
}

/// One hop: publishes move `n` to joint `to`, done once a member of its group acknowledged it;
/// each member tried gets the hop timeout.
async fn hand_off(
    bus: &Bus,
    trace: &Trace,
    n: u32,
    from: &str,
    to: &str,
    hop_timeout: Duration,
    members: usize,
) -> Result<(), String> {
    let hop = trace.open(n, Kind::Hop, &format!("{from}>{to}"));
    let deadline = SystemTime::now() + hop_timeout * u32::try_from(members).unwrap_or(1);
    let event = Event::new(n.to_string()).with_header(
        HOP_DEADLINE_HEADER,
        deadline
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string(),
    );
    match bus.publish_until(&topic(to), event, deadline).await {
        Ok(_) => {
            hop.close();
            Ok(())
        }
        Err(e) => Err(format!("the hop {from}>{to} failed: {e}")),
    }
}
