//! The sluice command line: parses arguments and calls the engine. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use sluice_engine::query::OutputFormat;
use sluice_engine::{EngineError, Project};

/// sluice moves operational data into a lake and a warehouse, correct and current.
///
/// Files, databases and events are extracted into a Delta Lake (a local folder or S3) with the
/// source position committed alongside the data, then loaded into a warehouse (embedded DuckDB
/// by default) exactly once. Start with `sluice demo`.
#[derive(Parser)]
#[command(name = "sluice", version, propagate_version = true)]
struct Cli {
    /// The config file; relative paths inside it resolve against its folder.
    #[arg(
        long,
        global = true,
        default_value = "sluice.toml",
        env = "SLUICE_CONFIG"
    )]
    config: PathBuf,
    /// Print results as JSON (and no progress lines).
    #[arg(long, global = true)]
    json: bool,
    /// Log level for diagnostics on stderr (error, warn, info, debug).
    #[arg(long, global = true, default_value = "warn", env = "SLUICE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract what is new, land it in the lake, load it into the warehouse.
    ///
    /// With no arguments every table syncs; name `SOURCE` or `SOURCE.TABLE` to pick.
    /// Exit code 0: every table synced; 1: some table failed (the others still synced);
    /// 2: configuration error.
    Sync {
        /// Sources or tables to sync (`suppliers`, `suppliers.supplier`).
        selectors: Vec<String>,
        /// Keep going: sync again every `--interval-secs` until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Pause between passes with --follow.
        #[arg(long, default_value_t = 30)]
        interval_secs: u64,
        /// Land in the lake only; leave the warehouse for a later sync.
        #[arg(long)]
        lake_only: bool,
    },
    /// Per table: lake version, changes, quarantined records, warehouse lag.
    Status,
    /// Run SQL over the lake (`source.table`, `source.table__changes`,
    /// `source.table__quarantine`), or in a warehouse with --warehouse.
    Query {
        sql: String,
        /// Run in this warehouse (e.g. `local`) instead of over the lake.
        #[arg(long)]
        warehouse: Option<String>,
        /// Output format (--json implies json).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Validate the config, then check that the lake, sources and warehouses are reachable.
    Check,
    /// Generate TPC-H drops, sync them twice, query the lake: the whole flow, no server needed.
    Demo {
        /// Folder for everything the demo writes.
        #[arg(long, default_value = "sluice-demo")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
}

async fn run(cli: Cli) -> Result<i32, EngineError> {
    let progress = !cli.json;
    match cli.command {
        Command::Demo { dir } => {
            sluice_engine::demo::demo(&dir, cli.json).await?;
            if cli.json {
                print_json(&serde_json::json!({ "config": dir.join("sluice.toml") }));
            }
            Ok(0)
        }
        Command::Sync {
            selectors,
            follow,
            interval_secs,
            lake_only,
        } => {
            let project = Project::open(&cli.config)?;
            loop {
                let report = sluice_engine::sync::sync(
                    &project,
                    &selectors,
                    sluice_engine::sync::SyncOptions {
                        progress,
                        load: !lake_only,
                    },
                )
                .await?;
                if cli.json {
                    print_json(&report);
                } else {
                    print!("{}", report.render());
                }
                if !follow {
                    return Ok(report.exit_code());
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(interval_secs)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(report.exit_code()),
                }
            }
        }
        Command::Status => {
            let project = Project::open(&cli.config)?;
            let s = sluice_engine::status::status(&project).await?;
            if cli.json {
                print_json(&s);
            } else {
                print!("{}", sluice_engine::status::render(&s));
            }
            Ok(0)
        }
        Command::Query {
            sql,
            warehouse,
            format,
        } => {
            let project = Project::open(&cli.config)?;
            let batches = match warehouse {
                Some(w) => sluice_engine::query::query_warehouse(&project, &w, &sql)?,
                None => sluice_engine::query::query_lake(&project, &sql).await?,
            };
            let format = match (cli.json, format) {
                (true, _) | (_, Format::Json) => OutputFormat::Json,
                (_, Format::Csv) => OutputFormat::Csv,
                (_, Format::Table) => OutputFormat::Table,
            };
            let text = sluice_engine::query::render(&batches, format)?;
            // CSV already ends its last line; tables and JSON do not.
            if text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
            Ok(0)
        }
        Command::Check => {
            let project = Project::open(&cli.config)?;
            let checks = sluice_engine::check::check(&project).await;
            let ok = checks.iter().all(|c| c.ok);
            if cli.json {
                print_json(&checks);
            } else {
                for c in &checks {
                    println!(
                        "{} {}: {}",
                        if c.ok { "ok  " } else { "FAIL" },
                        c.what,
                        c.detail
                    );
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
