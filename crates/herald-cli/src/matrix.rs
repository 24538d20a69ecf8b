//! `herald bench matrix` and `herald advise`: thin shells over `herald_bench::matrix` and
//! `herald_bench::score`. The matrix run's JSON is kept as the last run (see [`last_run_path`])
//! so `herald advise` ranks from this machine's figures without being told where they are.

use std::path::PathBuf;

use anyhow::Context as _;
use herald_bench::matrix::{Matrix, MatrixConfig};
use herald_bench::score::{self, Priorities};

use crate::{CliError, Global, Output, output};

/// Options of `herald bench matrix`.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// Event sizes in bytes, comma separated (e.g. 100,1024,16384).
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub sizes: Vec<usize>,
    /// Offered rates in events per second, comma separated; the maximum each row sustains is
    /// measured too unless --no-max.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub rates: Vec<u64>,
    /// Skip the maximum-rate cells.
    #[arg(long)]
    pub no_max: bool,
    /// Events in each maximum-rate cell.
    #[arg(long, default_value_t = 100_000)]
    pub max_events: u64,
    /// Duration of each fixed-rate cell, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub cell_ms: u64,
    /// A short run for CI: rates 1000,5000, 200 ms cells, small maximum cells.
    #[arg(long)]
    pub quick: bool,
    /// Also measure the brokered rows against this Kafka-compatible broker (HOST:PORT).
    #[arg(long, value_name = "BOOTSTRAP")]
    pub against: Option<String>,
    /// Write the self-contained HTML report (curves, table, priority sliders) to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Where to keep the run's JSON for `herald advise` (default: the last-run file).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Working directory for the broker's data, logs and the disk limit's file (default: a
    /// fresh directory under the system's temporary directory, removed afterwards).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// The brokered producer's `enable.idempotence` (acks=all rows only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotent: bool,
    /// The brokered producer's `max.in.flight.requests.per.connection`.
    #[arg(long, default_value_t = 5)]
    pub in_flight_max: u32,
    /// The brokered producer's `linger.ms`.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// How long the consumer is down in the consumer-down check, milliseconds.
    #[arg(long)]
    pub consumer_down_ms: Option<u64>,
    /// Handling time of the slow (third) service of the chain rows, microseconds.
    #[arg(long, default_value_t = 2_000)]
    pub chain_slow_hop_us: u64,
    /// The datagram receiver discards every Nth datagram before counting it (tests loss
    /// accounting).
    #[arg(long, hide = true)]
    pub datagram_drop_every: Option<u64>,
}

/// Where the last matrix run is kept: `$XDG_STATE_HOME/herald/last-matrix.json`, else
/// `$HOME/.local/state/herald/last-matrix.json`.
pub fn last_run_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("herald").join("last-matrix.json"))
}

/// Runs `herald bench matrix`.
pub fn run(global: &Global, args: MatrixArgs) -> Result<(), CliError> {
    let exe = std::env::current_exe().context("finding the herald binary")?;
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("herald-matrix-")
                .tempdir()
                .context("creating a working directory")?,
        ),
    };
    let work_dir = args
        .work_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_default();
    let mut config = if args.quick {
        MatrixConfig::quick(exe, work_dir)
    } else {
        let mut c = MatrixConfig::full(exe, work_dir);
        c.rates = args.rates.clone();
        c.cell_ms = args.cell_ms;
        c.max_events = args.max_events;
        c
    };
    config.sizes = args.sizes.clone();
    config.include_max = !args.no_max;
    config.against = args.against.clone();
    config.producer.idempotent = args.idempotent;
    config.producer.in_flight_max = args.in_flight_max;
    config.producer.linger_ms = args.linger_ms;
    if let Some(ms) = args.consumer_down_ms {
        config.consumer_down_ms = ms;
    }
    config.chain_slow_hop_us = args.chain_slow_hop_us;
    config.datagram_drop_every = args.datagram_drop_every;

    let started = std::time::Instant::now();
    let mut progress = |row: &str| {
        eprintln!(
            "{:>6.1} s  measuring {row}",
            started.elapsed().as_secs_f64()
        )
    };
    let matrix = herald_bench::matrix::run(&config, &mut progress)?;

    let json = serde_json::to_string_pretty(&matrix).context("encoding the matrix")?;
    if let Some(path) = args.save.clone().or_else(last_run_path) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "saved the run to {} (herald advise reads it)",
            path.display()
        );
    }
    if let Some(path) = &args.html {
        let html = herald_bench::html::render(&matrix)?;
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote the report to {}", path.display());
    }
    match global.output {
        Output::Json => println!("{json}"),
        Output::Table => print!("{}", herald_bench::matrix::markdown(&matrix)),
    }
    Ok(())
}

/// Options of `herald advise`.
#[derive(Debug, clap::Args)]
pub struct AdviseArgs {
    /// Weight of low latency (0 to 5).
    #[arg(long, default_value_t = 3)]
    pub latency: u8,
    /// Weight of throughput (0 to 5).
    #[arg(long, default_value_t = 3)]
    pub throughput: u8,
    /// Weight of durability: nothing lost when the consumer is down or the producer crashes.
    #[arg(long, default_value_t = 3)]
    pub durability: u8,
    /// Weight of a small footprint: CPU per event and memory of the processes needed.
    #[arg(long, default_value_t = 3)]
    pub footprint: u8,
    /// Weight of needing no broker.
    #[arg(long, default_value_t = 3)]
    pub independence: u8,
    /// Weight of the producer learning that a consumer handled the event.
    #[arg(long, default_value_t = 3)]
    pub confirmation: u8,
    /// The matrix run to rank from (default: the last run, else the reference figures).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Use the reference figures shipped with Herald even if a run exists.
    #[arg(long, conflicts_with = "from")]
    pub reference: bool,
}

/// Runs `herald advise`.
pub fn advise(global: &Global, args: AdviseArgs) -> Result<(), CliError> {
    let priorities = Priorities::new([
        args.latency,
        args.throughput,
        args.durability,
        args.footprint,
        args.independence,
        args.confirmation,
    ])?;
    let (matrix, source) = load(&args)?;
    let ranked = score::rank(&matrix, &priorities)?;
    match global.output {
        Output::Json => output::print_json(
            &serde_json::json!({ "source": source, "priorities": priorities.0, "ranking": ranked }),
            false,
        )
        .context("printing the ranking")?,
        Output::Table => {
            println!("from {source}");
            print!("{}", score::describe(&ranked));
        }
    }
    Ok(())
}

fn load(args: &AdviseArgs) -> Result<(Matrix, String), CliError> {
    let path = if args.reference {
        None
    } else {
        args.from
            .clone()
            .or_else(|| last_run_path().filter(|p| p.exists()))
    };
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::NotFound(format!("cannot read {}: {e}", path.display())))?;
            let matrix: Matrix = serde_json::from_str(&text).map_err(|e| {
                CliError::Usage(format!("{} is not a matrix run: {e}", path.display()))
            })?;
            if matrix.schema != herald_bench::matrix::SCHEMA {
                return Err(CliError::Usage(format!(
                    "{} has schema {:?}, expected {:?}",
                    path.display(),
                    matrix.schema,
                    herald_bench::matrix::SCHEMA
                )));
            }
            Ok((matrix, path.display().to_string()))
        }
        None => Ok((
            score::reference()?,
            "the reference figures shipped with Herald (docs/choosing-a-way.md)".into(),
        )),
    }
}
