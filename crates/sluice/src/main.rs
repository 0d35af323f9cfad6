//! The sluice command line: parses arguments and calls the engine. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use sluice_engine::query::OutputFormat;
use sluice_engine::serve::Serving;
use sluice_engine::state::StateStore;
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
    /// Diagnostics as text lines, or as one JSON object per line (for log collectors: the
    /// event's fields, such as source and table, as keys).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLUICE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract what is new, land it in the lake, load it into the warehouse.
    ///
    /// With no arguments every table syncs; name `SOURCE` or `SOURCE.TABLE` to pick.
    /// CDC sources (MySQL binlog) catch up to the server's current position, load, and exit.
    /// Exit code 0: every table synced; 1: some table failed (the others still synced);
    /// 2: configuration error; 3: some table halted by a schema change.
    Sync {
        /// Sources or tables to sync (`suppliers`, `shop.orders`).
        selectors: Vec<String>,
        /// Keep going until Ctrl-C or SIGTERM: every source at once, change streams open and
        /// loading as they commit, other sources syncing again every `--interval-secs`.
        #[arg(long)]
        follow: bool,
        /// Snapshot these `SOURCE.TABLE`s again from scratch (e.g. after the binlog position
        /// they needed was purged), then continue CDC from the new snapshot.
        #[arg(long, value_name = "SOURCE.TABLE")]
        resnapshot: Vec<String>,
        /// Pause between passes with --follow.
        #[arg(long, default_value_t = 30)]
        interval_secs: u64,
        /// Land in the lake only; leave the warehouse for a later sync.
        #[arg(long)]
        lake_only: bool,
    },
    /// Run every source on its schedule until Ctrl-C or SIGTERM: the daemon.
    ///
    /// Each source runs on its `schedule`: "continuous" (the default for `mode = "cdc"`:
    /// change streams stay open, loading as they commit), "hourly" (the default for the rest),
    /// "daily", or a cron pattern ("0 2 * * *"; six fields put seconds first;
    /// "CRON_TZ=Europe/Berlin 0 2 * * *" for a time zone, UTC otherwise). A files source with
    /// `trigger = "arrival"` lists its folder every `poll_interval_secs` (60) and lands new
    /// files as they come. A source never runs twice at once: ticks that come while its pass
    /// runs are skipped and counted. Transient failures are tried again with doubling waits
    /// (1 s up to 5 min, jittered; `[serve] retries`, `retry_first_secs`, `retry_max_secs`);
    /// one failing source never stops the others. On stop, no
    /// new pass starts and the ones running end cleanly; then a summary per source prints.
    ///
    /// Beside the sources: an HTTP API and Prometheus metrics on `[serve] listen`
    /// (127.0.0.1:8080): GET /health, /metrics, /api/tables, /api/runs; POST
    /// /api/tables/SOURCE.TABLE/sync, /api/tables/SOURCE.TABLE/schema/accept, /api/query
    /// {"sql": "..."}. Off loopback `[serve] token` is required and asked for as a bearer
    /// token. An events source (`kind = "events"`) takes POST /events/SOURCE[/TABLE] with
    /// NDJSON or a JSON array (gzip too), answering 200 once the events are in the lake. Every
    /// run goes into the run history (`sluice runs`); `[[alerts]]` webhooks hear
    /// of failures, halts, freshness breaches (`max_lag_secs`) and recoveries. Processes
    /// sharing one `[state]` store split the sources between them by lease.
    Serve {
        /// Stop after the lake: no warehouse loads (the lake is queried with `sluice query`,
        /// or another process loads it).
        #[arg(long)]
        lake_only: bool,
    },
    /// The run history: per table and run, when, how it ended, rows extracted, landed,
    /// quarantined and loaded (newest first).
    Runs {
        /// How many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this source's runs.
        #[arg(long)]
        source: Option<String>,
    },
    /// Per table: lake version, changes, quarantined records, warehouse lag.
    Status,
    /// Run SQL over the lake (`source.table`, `source.table__changes`,
    /// `source.table__quarantine`, `transforms.NAME`), or in a warehouse with --warehouse.
    ///
    /// JSON text columns take JSON functions: `json_get_str(doc, 'a', 'b')` (also
    /// `doc->'a'->>'b'`), `json_get_int`, `json_get_float`, `json_get_bool`, `json_length`,
    /// `json_contains`, `json_object_keys`, and `unnest(json_get_array(doc, 'items'))` for
    /// one row per array element (each element JSON text: `json_as_text(x)` for a string).
    ///
    /// A three-part name `WAREHOUSE.schema.table` reads a table of a DuckDB or PostgreSQL
    /// warehouse in the same query, so lake and warehouse tables join: only the columns used
    /// and the filters the warehouse judges exactly alike are sent to it (`--log info` shows
    /// each SELECT).
    Query {
        sql: String,
        /// Run in this warehouse (e.g. `local`) instead of over the lake.
        #[arg(long)]
        warehouse: Option<String>,
        /// Output format (--json implies json).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Read the lake as it was: a time (2026-12-01T10:00:00Z), a date (its midnight,
        /// UTC), or a version number (each table at that version of its log).
        #[arg(long, value_name = "TIME|VERSION")]
        as_of: Option<sluice_engine::query::AsOf>,
        /// Write the results to this file instead (.csv, .json, .jsonl or .parquet; a path
        /// or s3://bucket/key).
        #[arg(long, value_name = "FILE")]
        out: Option<String>,
    },
    /// The schema catalog and gate: what each lake table's columns are, how they changed,
    /// and what a halted warehouse table waits for.
    ///
    /// The lake takes every schema change (new columns, off-type values in `<column>__<type>`
    /// variant columns, dropped columns kept as NULLs); `schema_changes` (halt | evolve |
    /// freeze, or per kind: new_table, new_column, dropped_column, widened_type,
    /// incompatible_type) decides what each warehouse table does with them.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Data-quality checks (`[[sources.S.tables.T.checks]]`): each check's latest result
    /// per warehouse table, and `accept` to let a halted table's failing changes through.
    ///
    /// Checks run at every load over the changes it is about to apply, after the lake took
    /// them: not_null, unique, accepted_values, range, pattern, reference (to another lake
    /// table's column), sql (a predicate every row satisfies), row_count (rows per load) and
    /// freshness (age of the newest row). A failing check warns (loads anyway), quarantines
    /// (holds the failing rows back, recorded in `SOURCE.TABLE__quarantine`) or halts (loads
    /// up to the first failing change, exit 3). Every result is kept in the lake:
    /// `sluice query "SELECT * FROM shop.orders__checks"`.
    Checks {
        #[command(subcommand)]
        action: ChecksAction,
    },
    /// Find what a folder tree of files holds: formats, partitions and a schema, with the
    /// evidence for each column's type; `--register NAME` adds it to the config as a files
    /// source, so `sluice sync NAME` lands it and `sluice query` reads it.
    ///
    /// URL is a local folder or `s3://bucket/prefix/`. CSV, TSV, JSON (lines or arrays) and
    /// Parquet files, `.gz`/`.zst` or not, may mix. Folders between URL and the files are
    /// partitions: `dt=2024-06-01` gives column `dt` (a date), any other folder
    /// `partition_<level>`. Types come from files spread over the whole listing (first, last
    /// and evenly between), so a first file of NULLs or whole numbers does not decide them.
    Crawl {
        /// A local folder or `s3://bucket/prefix/` (a `{date}` folder pattern works too).
        url: String,
        /// Register as this files source (`NAME`, or `SOURCE.TABLE` to name the table too).
        #[arg(long, value_name = "NAME")]
        register: Option<String>,
        /// Key columns of the registered table (comma-separated): loads merge on them.
        #[arg(long, value_delimiter = ',', requires = "register")]
        primary_key: Vec<String>,
        /// Files to sample for inference, spread over the listing.
        #[arg(long, default_value_t = sluice_core::config::DEFAULT_SAMPLE_FILES)]
        sample_files: usize,
    },
    /// Run `[reports.NAME]` now: each one's SQL over the lake, written to its `out` file.
    ///
    /// With no names every report runs. `out` is a path (relative to the config's folder) or
    /// `s3://bucket/key` named .csv, .json, .jsonl or .parquet; `{date}` (2026-12-06),
    /// `{time}` (143000, UTC) and `{name}` in it are filled in, so each run keeps its file.
    /// `sluice serve` runs each report at its `schedule` (default "daily"). Runs go into the
    /// run history (`sluice runs --source reports`). Exit code 1 when a report failed.
    Report {
        /// Reports to run (default: all).
        names: Vec<String>,
    },
    /// Prove a warehouse table equal to its source table, or name the keys that differ.
    ///
    /// Both tables are checksummed inside their own database, by key range, over a canonical
    /// text of every column (decimals with their scale, floats to 6 decimal places, times in
    /// UTC): ranges that differ are cut smaller until row hashes are compared, so rows never
    /// leave either server and only the hashes of differing ranges do. Reports keys missing
    /// from the warehouse, extra in it and different, with counts. Differences are checked
    /// again (`--rechecks` times, `--settle-secs` apart) so that changes a running pipeline
    /// is still carrying are not reported. `--repair` reads the differing keys again from
    /// the source, lands them in the lake as fresh changes (`r`, or `d` for keys the source
    /// no longer has), loads them, and checks them again. Sources: MySQL/MariaDB;
    /// warehouses: DuckDB and PostgreSQL; merge tables with a key. Exit code 0: equal (or
    /// equal after the repair); 1: differences remain.
    Reconcile {
        /// The table, as `SOURCE.TABLE`.
        table: String,
        /// Compare with this warehouse rather than the table's own.
        #[arg(long)]
        warehouse: Option<String>,
        /// Land the differing keys again through the lake, load them and check them again.
        /// Holds the source's lease: it cannot run while `sluice serve` captures the source.
        #[arg(long)]
        repair: bool,
        /// How many times differing keys are checked again before they count.
        #[arg(long, default_value_t = 3)]
        rechecks: u32,
        /// Seconds between those checks (time for the pipeline to carry changes in flight).
        #[arg(long, default_value_t = 5.0)]
        settle_secs: f64,
        /// Rows per key range of the first pass.
        #[arg(long, default_value_t = 100_000)]
        segment_rows: u64,
    },
    /// Create views in a warehouse that read the lake's own files, nothing copied.
    ///
    /// Per source a schema `lake_SOURCE` gets two views per lake table: `TABLE` (current
    /// state: the latest change per key, deletes removed) and `TABLE__changes` (every change).
    /// DuckDB reads the exact Parquet files of the lake's current version (a local lake).
    /// Redshift reads them through Spectrum: a symlink manifest is written beside each table
    /// (`_symlink_format_manifest/manifest`), an external schema over the data catalog
    /// database `lake_SOURCE` (created if missing, with the warehouse's `iam_role`) gets an
    /// external table per lake table, and late-binding views sit on top. `--athena` writes
    /// the manifests and prints the DDL to run in Athena. The views show the lake as of
    /// this run: run it again after syncs to move them on. PostgreSQL cannot read Parquet;
    /// load it with `sluice sync`.
    Expose {
        /// The warehouse to create the views in (a DuckDB or Redshift warehouse of the config).
        #[arg(required_unless_present = "athena")]
        warehouse: Option<String>,
        /// For Athena: write the manifests and print the DDL (no connection is made).
        #[arg(long, conflicts_with = "warehouse")]
        athena: bool,
        /// Schema (Athena: database) name prefix; the source's name follows it.
        #[arg(long, default_value = sluice_engine::expose::DEFAULT_PREFIX)]
        prefix: String,
        /// Print the statements only: write no manifest, run nothing.
        #[arg(long)]
        print: bool,
    },
    /// The lake's own upkeep.
    Lake {
        #[command(subcommand)]
        action: LakeAction,
    },
    /// Redshift upkeep beyond what loads do (`analyze_after_changes`, `vacuum`).
    Redshift {
        #[command(subcommand)]
        action: RedshiftAction,
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
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum SchemaAction {
    /// The table's current columns and every schema version before them.
    Show {
        /// `SOURCE.TABLE`
        table: String,
    },
    /// Per warehouse table: the lake's schema changes it has not applied, and their policies.
    Diff {
        /// `SOURCE.TABLE`
        table: String,
    },
    /// Apply every pending schema change to the warehouse (add the columns) and load the
    /// backlog: resumes a halted table.
    Accept {
        /// `SOURCE.TABLE`
        table: String,
    },
}

#[derive(Subcommand)]
enum LakeAction {
    /// Rewrite a table's small data files (a sync of many small drops makes many) into files
    /// of `[lake] file_mb` (64 MiB), compressed as `[lake] compression` says. Nothing is
    /// changed: every position, every change and every earlier lake version stays readable
    /// (time travel and `sluice query` give the same results before and after).
    Compact {
        /// `SOURCE.TABLE`
        table: String,
    },
}

#[derive(Subcommand)]
enum RedshiftAction {
    /// Run `ANALYZE COMPRESSION` on each warehouse table of SOURCE.TABLE and show the
    /// encoding Redshift suggests for each column, with its estimated size reduction.
    /// `--apply` alters every column a suggestion would shrink (`ALTER TABLE ... ALTER
    /// COLUMN ... ENCODE ...`). Redshift samples the table: run it on a loaded table, at a
    /// quiet time.
    AnalyzeCompression {
        /// `SOURCE.TABLE`
        table: String,
        /// Apply the suggestions.
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Subcommand)]
enum ChecksAction {
    /// Each check's latest result per warehouse table: outcome, failing rows, a sample.
    Show {
        /// `SOURCE.TABLE`
        table: String,
    },
    /// Let every failing change now in the lake through the table's halting checks, and
    /// load: resumes a table a check halted (fixing the source cannot, since the failing
    /// change stays in the lake's log).
    Accept {
        /// `SOURCE.TABLE`
        table: String,
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
            resnapshot,
            interval_secs,
            lake_only,
        } => {
            let project = Project::open(&cli.config)?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            if follow {
                tokio::spawn(async move {
                    wait_for_stop_signal().await;
                    let _ = stop_tx.send(true);
                });
            }
            let mut resnapshot = resnapshot;
            let history = match StateStore::open(&project).await {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "run history not kept");
                    None
                }
            };
            loop {
                let started_at = chrono::Utc::now();
                let report = sluice_engine::sync::sync(
                    &project,
                    &selectors,
                    sluice_engine::sync::SyncOptions {
                        progress,
                        load: !lake_only,
                        follow: follow.then(|| stop_rx.clone()),
                        resnapshot: std::mem::take(&mut resnapshot),
                        interval: std::time::Duration::from_secs(interval_secs),
                    },
                )
                .await?;
                if let Some(h) = &history {
                    let records = sluice_engine::state::records_of(&report, "sync", started_at);
                    if let Err(e) = h.record(&records).await {
                        tracing::warn!(error = %e, "run history not written");
                    }
                }
                if cli.json {
                    print_json(&report);
                } else {
                    print!("{}", report.render());
                }
                if !follow {
                    return Ok(report.exit_code());
                }
                if *stop_rx.borrow() {
                    return Ok(report.exit_code());
                }
                let mut stop = stop_rx.clone();
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(interval_secs)) => {}
                    _ = stop.wait_for(|v| *v) => return Ok(report.exit_code()),
                }
            }
        }
        Command::Serve { lake_only } => {
            let project = std::sync::Arc::new(Project::open(&cli.config)?);
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_stop_signal().await;
                tracing::info!("stopping: no new passes; the running ones end");
                let _ = stop_tx.send(true);
            });
            let mut serving = Serving::new(project.clone()).await?;
            serving.lake_only = lake_only;
            let serving = std::sync::Arc::new(serving);
            let serve_config = project.config.serve.as_ref();
            let listen = serve_config
                .map(|s| s.listen())
                .unwrap_or(sluice_core::config::ServeConfig::DEFAULT_LISTEN);
            let token = match serve_config.and_then(|s| s.token.as_ref()) {
                Some(t) => Some(
                    t.resolve()
                        .map_err(|e| EngineError::Usage(format!("serve.token: {e}")))?,
                ),
                None => None,
            };
            let (addr, http) =
                sluice_server::start(serving.clone(), listen, token, stop_rx.clone())
                    .await
                    .map_err(EngineError::Usage)?;
            tracing::info!(%addr, "HTTP API and /metrics listening");
            let runs = sluice_engine::serve::serve(&serving, stop_rx).await;
            let _ = http.await;
            if cli.json {
                print_json(&runs);
            } else {
                for r in &runs {
                    println!(
                        "{} ({}): {} pass(es), {} failed, {} tick(s) skipped, {} row(s) landed, {} change(s) loaded",
                        r.source, r.schedule, r.passes, r.failed, r.skipped_ticks, r.rows_landed, r.changes_loaded
                    );
                }
            }
            Ok(0)
        }
        Command::Runs { limit, source } => {
            let project = Project::open(&cli.config)?;
            let store = StateStore::open(&project).await?;
            let runs = store
                .runs(
                    limit,
                    &sluice_engine::state::RunFilter {
                        source: source.as_deref(),
                        ..Default::default()
                    },
                )
                .await?;
            if cli.json {
                print_json(&runs);
            } else if runs.is_empty() {
                println!("no runs recorded yet");
            } else {
                print!("{}", sluice_engine::state::render(&runs));
            }
            Ok(0)
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
            as_of,
            out,
        } => {
            let project = Project::open(&cli.config)?;
            let batches = match (warehouse, as_of) {
                (Some(_), Some(_)) => {
                    return Err(EngineError::Usage(
                        "--as-of reads the lake's history; a warehouse query has none".into(),
                    ))
                }
                (Some(w), None) => sluice_engine::query::query_warehouse(&project, &w, &sql)?,
                (None, at) => sluice_engine::query::query_lake(&project, &sql, at.as_ref()).await?,
            };
            if let Some(dest) = out {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let bytes = sluice_engine::export::write_out(&project, &batches, &dest).await?;
                eprintln!("{rows} row(s) written to {dest} ({bytes} bytes)");
                return Ok(0);
            }
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
        Command::Schema { action } => {
            use sluice_engine::schema_cmd;
            let project = Project::open(&cli.config)?;
            match action {
                SchemaAction::Show { table } => {
                    let s = schema_cmd::show(&project, &table).await?;
                    match cli.json {
                        true => print_json(&s),
                        false => print!("{}", schema_cmd::render_show(&s)),
                    }
                }
                SchemaAction::Diff { table } => {
                    let d = schema_cmd::diff(&project, &table).await?;
                    match cli.json {
                        true => print_json(&d),
                        false => print!("{}", schema_cmd::render_diff(&d)),
                    }
                }
                SchemaAction::Accept { table } => {
                    let loads = schema_cmd::accept(&project, &table).await?;
                    if cli.json {
                        print_json(&loads);
                    } else {
                        for l in &loads {
                            println!(
                                "{} ({}): schema accepted, {} change(s) loaded, {} row(s) now",
                                l.target, l.mode, l.changes, l.rows_after
                            );
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Checks { action } => {
            use sluice_engine::quality;
            let project = Project::open(&cli.config)?;
            match action {
                ChecksAction::Show { table } => {
                    let results = quality::show(&project, &table).await?;
                    match cli.json {
                        true => print_json(&results),
                        false => print!("{}", quality::render(&results)),
                    }
                    let halted = results.iter().any(|r| r.outcome == "halted");
                    Ok(if halted { 3 } else { 0 })
                }
                ChecksAction::Accept { table } => {
                    let (through, loads) = quality::accept(&project, &table).await?;
                    if cli.json {
                        print_json(
                            &serde_json::json!({ "accepted_through_seq": through, "loads": loads }),
                        );
                    } else {
                        match through {
                            Some(seq) => {
                                println!("{table}: failing changes through seq {seq} accepted")
                            }
                            None => println!("{table}: nothing has landed; nothing to accept"),
                        }
                        for l in &loads {
                            println!(
                                "{} ({}): {} change(s) loaded, {} row(s) now{}",
                                l.target,
                                l.mode,
                                l.changes,
                                l.rows_after,
                                if l.halted.is_some() {
                                    ", still HALTED"
                                } else {
                                    ""
                                }
                            );
                        }
                    }
                    let halted = loads.iter().any(|l| l.halted.is_some());
                    Ok(if halted { 3 } else { 0 })
                }
            }
        }
        Command::Crawl {
            url,
            register,
            primary_key,
            sample_files,
        } => {
            use sluice_engine::crawl;
            let mut opts = crawl::CrawlOptions::new(&url, &cli.config);
            opts.register = register;
            opts.primary_key = primary_key;
            opts.sample_files = sample_files.max(1);
            let report = crawl::crawl(&opts).await?;
            match cli.json {
                true => print_json(&report),
                false => print!("{}", crawl::render(&report)),
            }
            Ok(0)
        }
        Command::Report { names } => {
            use sluice_engine::report;
            let project = Project::open(&cli.config)?;
            let names = if names.is_empty() {
                project.config.reports.keys().cloned().collect()
            } else {
                names
            };
            if names.is_empty() {
                return Err(EngineError::Usage(
                    "no [reports.NAME] in the config: add one with `sql` and `out`".into(),
                ));
            }
            for name in &names {
                report::config_of(&project, name)?;
            }
            let history = StateStore::open(&project).await.ok();
            let mut failed = false;
            let mut done = Vec::new();
            for name in &names {
                let started_at = chrono::Utc::now();
                let outcome = report::run(&project, name, started_at).await;
                if let Some(h) = &history {
                    let record = report::record_of(name, "command", started_at, &outcome);
                    if let Err(e) = h.record(&[record]).await {
                        tracing::warn!(error = %e, "run history not written");
                    }
                }
                match outcome {
                    Ok(r) => {
                        if !cli.json {
                            println!(
                                "report {}: {} row(s) written to {} ({} bytes)",
                                r.report, r.rows, r.out, r.bytes
                            );
                        }
                        done.push(r);
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("sluice: {e}");
                    }
                }
            }
            if cli.json {
                print_json(&done);
            }
            Ok(i32::from(failed))
        }
        Command::Reconcile {
            table,
            warehouse,
            repair,
            rechecks,
            settle_secs,
            segment_rows,
        } => {
            use sluice_engine::reconcile::{self, Cuts, ReconcileOptions};
            let project = Project::open(&cli.config)?;
            let opts = ReconcileOptions {
                warehouse,
                repair,
                rechecks,
                settle: std::time::Duration::from_secs_f64(settle_secs.max(0.0)),
                cuts: Cuts {
                    segment_rows: segment_rows.max(1),
                    ..Cuts::default()
                },
                progress,
            };
            let report = reconcile::reconcile(&project, &table, &opts).await?;
            if cli.json {
                print_json(&report);
            } else {
                print!("{}", report.render());
            }
            Ok(report.exit_code())
        }
        Command::Expose {
            warehouse,
            athena,
            prefix,
            print,
        } => {
            use sluice_engine::expose::{self, ExposeTarget};
            let project = Project::open(&cli.config)?;
            let target = match (warehouse, athena) {
                (Some(w), false) => ExposeTarget::Warehouse(w),
                _ => ExposeTarget::Athena,
            };
            let report = expose::expose(&project, &target, &prefix, print).await?;
            if cli.json {
                print_json(&report);
            } else {
                let statements = print || target == ExposeTarget::Athena;
                print!("{}", expose::render(&report, statements));
            }
            Ok(0)
        }
        Command::Lake {
            action: LakeAction::Compact { table },
        } => {
            use sluice_engine::lake_cmd;
            let project = Project::open(&cli.config)?;
            let report = lake_cmd::compact(&project, &table).await?;
            match cli.json {
                true => print_json(&report),
                false => print!("{}", lake_cmd::render(&report)),
            }
            Ok(0)
        }
        Command::Redshift {
            action: RedshiftAction::AnalyzeCompression { table, apply },
        } => {
            use sluice_engine::redshift_cmd;
            let project = Project::open(&cli.config)?;
            let reports = redshift_cmd::analyze_compression(&project, &table, apply).await?;
            match cli.json {
                true => print_json(&reports),
                false => print!("{}", redshift_cmd::render(&reports)),
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

/// Ctrl-C or SIGTERM: finish the current batch and exit.
async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    // Errors from libraries (the Delta kernel) capture a backtrace when RUST_BACKTRACE is set
    // and print it with their message: users get the message. Panics keep theirs. Set before
    // any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: never into files, pipes and log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        );
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
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
