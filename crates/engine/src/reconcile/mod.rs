//! `sluice reconcile SOURCE.TABLE`: proves a warehouse table equal to its source table, or
//! names the keys that differ — missing, extra, different — and with `--repair` lands them
//! again through the lake and loads them.
//!
//! Both tables are checksummed inside their own database by key range over a canonical text
//! of every column ([`sluice_core::canon`]); only the row hashes of ranges that differ are
//! read, and rows never are. Differences are checked again after a pause, so that changes a
//! running pipeline is still carrying are not reported.

mod compare;
mod repair;

use std::time::{Duration, Instant};

use serde::Serialize;

use sluice_core::canon::{Column, Dialect, Key, Render, Side};
use sluice_core::change::{data_schema, DELETED};
use sluice_core::config::{Deletes, LoadMode, WarehouseConfig};
use sluice_core::names::{identifiers, quote_ident};
use sluice_sources::source::SourceTable;

pub use compare::{Cuts, Differences, Work};
pub use repair::Landed;

use crate::{EngineError, Project};

#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// The warehouse to compare with (None: the table's own).
    pub warehouse: Option<String>,
    pub repair: bool,
    /// Times differing keys are checked again, `settle` apart, before they count.
    pub rechecks: u32,
    pub settle: Duration,
    pub cuts: Cuts,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            warehouse: None,
            repair: false,
            rechecks: 3,
            settle: Duration::from_secs(5),
            cuts: Cuts::default(),
            progress: false,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReconcileReport {
    /// `SOURCE.TABLE`.
    pub table: String,
    pub warehouse: String,
    /// The warehouse table (`schema.table`).
    pub target: String,
    /// Columns compared, key included.
    pub columns: Vec<String>,
    /// Columns not compared, each with why.
    pub left_out: Vec<String>,
    pub work: Work,
    /// Keys at the source and not in the warehouse (each key: its columns' values as text;
    /// for a table without a key, each row's values, once per copy).
    pub missing: Vec<Key>,
    /// Keys in the warehouse and not at the source.
    pub extra: Vec<Key>,
    /// Keys in both whose values differ.
    pub different: Vec<Key>,
    /// What `--repair` landed, and how the repaired keys compared after it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Repair {
    #[serde(flatten)]
    pub landed: Landed,
    /// Repaired keys that still differ after the load (0: the tables are equal again).
    pub still_differing: usize,
}

impl ReconcileReport {
    pub fn differs(&self) -> bool {
        !(self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty())
    }

    /// 0: equal (or repaired and equal again); 1: differences remain.
    pub fn exit_code(&self) -> i32 {
        match (&self.repair, self.differs()) {
            (Some(r), _) if r.still_differing == 0 => 0,
            (_, false) => 0,
            _ => 1,
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{} ↔ {}.{}: {} row(s) at the source, {} in the warehouse; {} column(s) compared\n",
            self.table,
            self.warehouse,
            self.target,
            self.work.source_rows,
            self.work.warehouse_rows,
            self.columns.len()
        );
        for l in &self.left_out {
            out += &format!("  not compared: {l}\n");
        }
        if !self.differs() {
            out += "  equal\n";
        }
        for (what, keys) in [
            ("missing from the warehouse", &self.missing),
            ("extra in the warehouse", &self.extra),
            ("different", &self.different),
        ] {
            if keys.is_empty() {
                continue;
            }
            let shown: Vec<String> = keys.iter().take(20).map(|k| k.join("|")).collect();
            let more = match keys.len() > 20 {
                true => format!(" … and {} more", keys.len() - 20),
                false => String::new(),
            };
            out += &format!("  {} {what}: {}{more}\n", keys.len(), shown.join(", "));
        }
        if self.work.in_flight > 0 {
            out += &format!(
                "  {} difference(s) agreed when checked again (changes in flight)\n",
                self.work.in_flight
            );
        }
        if let Some(r) = &self.repair {
            out += &format!(
                "  repair: {} row(s) landed again, {} delete(s), lake version {}; {}\n",
                r.landed.rows,
                r.landed.deletes,
                r.landed
                    .lake_version
                    .map_or("unchanged".into(), |v| v.to_string()),
                match r.still_differing {
                    0 => "equal after the load".to_string(),
                    n => format!("{n} key(s) still differ after the load"),
                }
            );
        }
        out += &format!(
            "  {} range checksum(s), {} row hash(es) read, {:.1} s\n",
            self.work.ranges, self.work.hashes_read, self.seconds
        );
        out
    }
}

/// Compares `SOURCE.TABLE` with its warehouse table (and repairs it with `opts.repair`).
pub async fn reconcile(
    project: &Project,
    name: &str,
    opts: &ReconcileOptions,
) -> Result<ReconcileReport, EngineError> {
    let started = Instant::now();
    let mut spec = crate::schema_cmd::spec_of(project, name).await?;
    if let Some(w) = &opts.warehouse {
        spec.warehouse = w.clone();
    }
    let source = crate::sources::build(project, &spec.source)?;
    let table = source_table(&source, &spec).await?;
    let mut src = source.canonical(&table).ok_or_else(|| {
        EngineError::Usage(format!(
            "{name}: a {} source cannot be reconciled yet (MySQL/MariaDB can)",
            source.kind()
        ))
    })?;
    if src.key.is_empty() && opts.repair {
        return Err(EngineError::Usage(format!(
            "{name} has no key: --repair re-reads rows by key (compare without it; \
             `sluice sync --resnapshot {name}` rebuilds a keyless table)"
        )));
    }
    if let Some(k) = src.key.iter().find(|k| !k.render.keyable()) {
        return Err(EngineError::Usage(format!(
            "{name}: key column `{}` cannot bound a range (a float or an uncomparable type)",
            k.name
        )));
    }
    let dialect = dialect_of(project, &spec.warehouse)?;
    let mut wh = project.warehouse(&spec.warehouse)?;
    let target = project
        .targets_in(&spec, wh.as_mut())?
        .into_iter()
        .find(|t| t.mode == LoadMode::Merge)
        .ok_or_else(|| {
            EngineError::Usage(format!(
                "{name} is not loaded as a merge table into `{}`: reconcile compares a table's current state",
                spec.warehouse
            ))
        })?;
    let existing = wh.columns(&target)?;
    if existing.is_empty() {
        return Err(EngineError::Usage(format!(
            "{name}: warehouse table {} does not exist yet: sync first",
            target.display()
        )));
    }
    let lake = lake_types(project, &spec).await?;
    // Named as loads name them: from the lake's columns.
    let mapped = identifiers(
        lake.fields().iter().map(|f| f.name().as_str()),
        project.identifier_limit(&spec.warehouse),
    );
    let warehouse_name = |n: &str| {
        lake.index_of(n)
            .ok()
            .map(|i| mapped[i].clone())
            .unwrap_or_else(|| n.to_string())
    };
    // The warehouse renders each column from the lake's type, which its table was made from.
    let mut left_out = Vec::new();
    let mut kept = Vec::new();
    let mut wh_columns = Vec::new();
    for c in src.columns.drain(..) {
        let why = match (&c.render, lake.field_with_name(&c.name)) {
            (Render::Left(why), _) => Some(why.clone()),
            (_, Err(_)) => Some("not in the lake yet (sync first)".to_string()),
            _ if !existing.contains(&warehouse_name(&c.name)) => {
                Some("not in the warehouse table (its schema change is pending)".to_string())
            }
            _ => None,
        };
        if let Some(why) = why {
            left_out.push(format!("{}: {why}", c.name));
            continue;
        }
        let t = lake.field_with_name(&c.name).expect("checked").data_type();
        wh_columns.push(Column {
            name: warehouse_name(&c.name),
            render: Render::of(t),
        });
        kept.push(c);
    }
    src.columns = kept;
    let wh_key = src
        .key
        .iter()
        .map(|c| {
            let t = lake
                .field_with_name(&c.name)
                .map(|f| f.data_type().clone())
                .map_err(|_| {
                    EngineError::Usage(format!("{name}: key `{}` is not in the lake yet", c.name))
                })?;
            Ok(Column {
                name: warehouse_name(&c.name),
                render: Render::of(&t),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let wh_side = Side {
        dialect,
        relation: format!(
            "{}.{}",
            quote_ident(&target.schema),
            quote_ident(&target.table)
        ),
        key: wh_key,
        columns: wh_columns,
        exclude: (target.deletes == Deletes::Soft).then(|| quote_ident(DELETED)),
    };
    let warehouse = spec.warehouse.clone();
    let mut pair = compare::Pair {
        source: source.clone(),
        src: src.clone(),
        wh: wh_side,
        warehouse: Some(wh),
        open: Box::new(move || project.warehouse(&warehouse)),
    };
    let mut say = |m: &str| {
        if opts.progress {
            eprintln!("reconcile {name}: {m}");
        }
    };
    let mut work = Work::default();
    let cuts = Cuts {
        buckets: opts.cuts.buckets.max(1),
        ..opts.cuts
    };
    let found = match src.key.is_empty() {
        false => pair.compare(cuts, &mut work, &mut say).await?,
        // Rows of a table without a key are compared as a multiset, bucketed by hash.
        true => pair.compare_rows(cuts.buckets, &mut work).await?,
    };
    let found = pair
        .recheck(
            found,
            (opts.rechecks, opts.settle),
            cuts,
            &mut work,
            &mut say,
        )
        .await?;
    let repaired = match opts.repair && !found.is_empty() {
        false => None,
        true => {
            let mut reread = found.missing.clone();
            reread.extend(found.different.iter().cloned());
            say(&format!(
                "repairing: {} key(s) read again, {} deleted",
                reread.len(),
                found.extra.len()
            ));
            let landed =
                repair::land(project, &source, &spec, &table, &src, &reread, &found.extra).await?;
            // A load opens the warehouse itself (DuckDB takes one connection at a time).
            pair.release();
            let loads = crate::load::load(project, &spec).await?;
            if let Some(h) = loads.iter().find_map(|l| l.halted.clone()) {
                say(&format!("the load is halted by a schema change: {h}"));
            }
            let mut keys = reread;
            keys.extend(found.extra.iter().cloned());
            let after = pair.now(&keys).await?;
            Some(Repair {
                landed,
                still_differing: after.len(),
            })
        }
    };
    let mut columns: Vec<String> = src.key.iter().map(|c| c.name.clone()).collect();
    columns.extend(src.columns.iter().map(|c| c.name.clone()));
    Ok(ReconcileReport {
        table: name.to_string(),
        warehouse: spec.warehouse.clone(),
        target: target.display(),
        columns,
        left_out,
        work,
        missing: found.missing,
        extra: found.extra,
        different: found.different,
        repair: repaired,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The source's table as it is now, with the key the lake merges on.
async fn source_table(
    source: &sluice_sources::source::SharedSource,
    spec: &sluice_core::config::TableSpec,
) -> Result<SourceTable, EngineError> {
    let found = source
        .tables(Some(std::slice::from_ref(&spec.table)))
        .await?
        .into_iter()
        .find(|t| t.name == spec.table)
        .ok_or_else(|| {
            EngineError::Usage(format!(
                "{}.{}: the source has no such table",
                spec.source, spec.table
            ))
        })?;
    Ok(SourceTable {
        key: match spec.primary_key.is_empty() {
            true => found.key.clone(),
            false => spec.primary_key.clone(),
        },
        ..found
    })
}

/// The lake's source columns for the table (their types are the warehouse table's).
async fn lake_types(
    project: &Project,
    spec: &sluice_core::config::TableSpec,
) -> Result<arrow::datatypes::Schema, EngineError> {
    let log = crate::schema_cmd::log_of(project, spec).await?;
    Ok(data_schema(log.schema()?.as_ref()))
}

/// The SQL a warehouse checksums in.
fn dialect_of(project: &Project, warehouse: &str) -> Result<Dialect, EngineError> {
    match project.config.warehouses.get(warehouse) {
        Some(WarehouseConfig::Duckdb { .. }) => Ok(Dialect::DuckDb),
        Some(WarehouseConfig::Postgres { .. }) => Ok(Dialect::Postgres),
        Some(WarehouseConfig::Redshift { .. }) => Err(EngineError::Usage(format!(
            "warehouse `{warehouse}` is Redshift, which reconcile does not compare yet (DuckDB and PostgreSQL)"
        ))),
        None => Err(EngineError::Usage(format!("no warehouse named `{warehouse}`"))),
    }
}
