//! A synchronous chain over direct requests, like the joints of a robot arm: a command asks the
//! base to move, the base does its part and asks the shoulder, which asks the elbow, which asks
//! the wrist. Each joint is its own bus (its own process in a real arm) serving one topic, and
//! every nested request inherits the command's deadline, so one slow joint fails the whole move
//! on time instead of leaving the joints before it waiting.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use herald::{Bus, Event, HandlerError, RequestError, Subscription};

/// The joints from the command's end of the chain to the tip.
const JOINTS: [&str; 4] = ["base", "shoulder", "elbow", "wrist"];
const MOVES_MAX: u32 = 10_000;
/// Exit status when at least one move failed.
const EXIT_MOVE_FAILED: i32 = 2;

#[derive(Parser, Debug)]
#[command(about = "A robot arm's joints as a chain of direct requests under one deadline.")]
struct Args {
    /// Moves the command issues, one after the other.
    #[arg(long, default_value_t = 3)]
    moves: u32,
    /// Time each move may take through the whole chain, in milliseconds.
    #[arg(long, default_value_t = 500)]
    deadline_ms: u64,
    /// Time each joint takes for its part of a move, in milliseconds.
    #[arg(long, default_value_t = 20)]
    stage_ms: u64,
    /// Make this joint slow (base, shoulder, elbow or wrist), to see the deadline fail the chain.
    #[arg(long)]
    slow_stage: Option<String>,
    /// How long the slow joint takes, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    slow_ms: u64,
    /// Find the joints with mDNS instead of handing each one the next one's address.
    #[arg(long)]
    mdns: bool,
    /// The address the joints listen on (any free port each).
    #[arg(long, default_value = "127.0.0.1")]
    listen_ip: IpAddr,
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

/// Starts the joints (tip first, so each can be handed the next one's address), runs the moves,
/// stops the joints; returns how many moves completed.
async fn run(args: &Args) -> anyhow::Result<u32> {
    let mut joints: Vec<Subscription> = Vec::with_capacity(JOINTS.len());
    let mut next_addr: Option<SocketAddr> = None;
    for (i, joint) in JOINTS.iter().enumerate().rev() {
        let next = JOINTS.get(i + 1).map(|j| topic(j));
        let bus = connect(args, next_addr).await?;
        let work = if args.slow_stage.as_deref() == Some(*joint) {
            Duration::from_millis(args.slow_ms)
        } else {
            Duration::from_millis(args.stage_ms)
        };
        let sub = serve_joint(&bus, joint, next, work, SocketAddr::new(args.listen_ip, 0))
            .await
            .with_context(|| format!("starting the {joint}"))?;
        next_addr = sub.local_addr();
        joints.push(sub);
    }
    let command = connect(args, next_addr).await?;
    let deadline = Duration::from_millis(args.deadline_ms);
    let mut completed = 0;
    for n in 1..=args.moves {
        let started = Instant::now();
        let result = command
            .request(&topic(JOINTS[0]), Event::new(format!("move {n}")))
            .deadline(deadline)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(reply) => {
                completed += 1;
                println!(
                    "move {n}: done in {ms:.2} ms: {}",
                    String::from_utf8_lossy(&reply.payload)
                );
            }
            Err(RequestError::DeadlineExceeded) => {
                println!(
                    "move {n}: failed after {ms:.0} ms: deadline exceeded, the whole chain gave up"
                )
            }
            Err(e) => println!("move {n}: failed after {ms:.0} ms: {e}"),
        }
    }
    // Stopping a joint waits for its work in flight, so every joint has reported by now.
    for sub in joints {
        sub.shutdown().await?;
    }
    Ok(completed)
}

async fn connect(args: &Args, peer: Option<SocketAddr>) -> anyhow::Result<Bus> {
    let url = match (args.mdns, peer) {
        (true, _) => "direct://mdns".to_string(),
        (false, Some(addr)) => format!("direct://{addr}"),
        (false, None) => "direct://".to_string(),
    };
    Ok(Bus::connect(&url).await?)
}

/// Serves one joint: does its part of the move, then asks the next joint within the same
/// deadline; the reply lists every joint that moved.
async fn serve_joint(
    bus: &Bus,
    joint: &'static str,
    next: Option<String>,
    work: Duration,
    listen: SocketAddr,
) -> Result<Subscription, herald::SubscribeError> {
    bus.serve(&topic(joint))
        .bind(listen)
        .reply(move |request: Event, ctx| {
            let next = next.clone();
            async move {
                let what = String::from_utf8_lossy(&request.payload).into_owned();
                let abandoned = Abandoned {
                    joint,
                    what: Some(what.clone()),
                };
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                let path = match next {
                    Some(next) => {
                        // The nested request inherits the caller's deadline through `ctx`.
                        let reply = ctx
                            .request(&next, Event::new(what))
                            .await
                            .map_err(|e| HandlerError::retryable(format!("{joint}: {e}")))?;
                        format!("{joint} > {}", String::from_utf8_lossy(&reply.payload))
                    }
                    None => joint.to_string(),
                };
                abandoned.done();
                Ok(Event::new(path))
            }
        })
        .await
}

/// Reports a joint's part of a move that ended without a reply: the deadline passed while it
/// worked (its work is dropped) or while a joint after it did.
struct Abandoned {
    joint: &'static str,
    what: Option<String>,
}

impl Abandoned {
    fn done(mut self) {
        self.what = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(what) = self.what.take() {
            println!("{}: abandoned {what} (deadline passed)", self.joint);
        }
    }
}
