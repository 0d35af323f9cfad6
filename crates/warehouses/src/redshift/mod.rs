//! The Redshift warehouse.
//!
//! Redshift loads fast from S3, and the lake is on S3: a load lists the Parquet files of the
//! lake commits it covers in a manifest and copies them itself, then applies them in one
//! transaction with the ledger.
//!
//! ```text
//!   read the files' text columns       → VARCHAR sizes; oversize values (file rewritten cut)
//!   PUT <table>/_sluice_redshift/<load>.manifest
//!   ALTER TABLE ... ADD COLUMN (evolve) / ALTER COLUMN ... TYPE VARCHAR(n) (widen)
//!   BEGIN
//!     LOCK _sluice.ledger; check the target's row (moved: refuse)
//!     CREATE TABLE ... ENCODE AUTO | per-column ENCODE, DISTSTYLE/DISTKEY, COMPOUND SORTKEY
//!     CREATE TEMP TABLE _sluice_stage (shaped like the files)
//!     COPY _sluice_stage FROM '…manifest' IAM_ROLE '…' FORMAT AS PARQUET MANIFEST
//!     DELETE FROM _sluice_stage WHERE seq outside the load's range
//!     apply by mode (the statements of `sql`, shared with DuckDB and PostgreSQL)
//!     UPDATE/INSERT _sluice.ledger
//!   END
//! ```
//!
//! Column changes run before the transaction because Redshift refuses `ALTER COLUMN` inside
//! one; a column widened or added by a load that then fails is harmless. A new table is
//! created inside it, with its ledger row: a table without one is not sluice's.
//!
//! There is no Redshift here. Two stand-ins run the same loader against PostgreSQL (which
//! speaks the same protocol), the Redshift-only spellings (`SUPER`, `VARBYTE`, `JSON_PARSE`,
//! the layout clauses) translated, so the conformance suite checks everything else:
//! [`Staging::PostgresStandIn`] takes the change rows over the connection, and
//! [`Staging::PostgresStandInCopy`] loads from the lake's files as above, manifests and
//! version stages included, playing each `COPY` itself (the files a manifest lists, by
//! column position).

mod dialect;
mod fit;
mod lakecopy;
pub mod maintenance;

pub use dialect::{
    alter_layout, column_type, copy_manifest, copy_version, create_stage, create_table,
    insert_version, ledger_upsert, load_time, manifest, stage_type, trim_stage, truncated_flag,
    varchar_size, widen, Bound, CurrentLayout, TableLayout, MAX_IDENTIFIER, MAX_VARBYTE,
    MAX_VARCHAR,
};
pub use fit::Fit;
pub use maintenance::Maintenance;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio_postgres::Client;

use sluice_core::change::TRUNCATED;
use sluice_core::config::LoadMode;
use sluice_core::names::quote_ident as q;

use crate::columns::{shape_table, Columns};
use crate::pgcopy::postgres_type;
use crate::postgres::{
    in_transaction, ledger_rows_where, move_ledger, pg_error, PgOptions, Postgres,
};
use crate::sql::{system_columns, Apply};
use crate::{
    Exposure, LakeFiles, LedgerEntry, LedgerMove, LedgerRow, LoadReport, Target, Warehouse,
    WarehouseError,
};

const STAGE: &str = "\"_sluice_stage\"";
const WORK: &str = "\"_sluice_work\"";

/// Where a load's change rows come from.
#[derive(Debug, Clone)]
pub enum Staging {
    /// Redshift: `COPY ... FORMAT AS PARQUET MANIFEST IAM_ROLE` from the lake's own files.
    LakeManifest { iam_role: String },
    /// PostgreSQL standing in for Redshift (tests): rows sent over the connection, the
    /// Redshift-only spellings translated.
    PostgresStandIn,
    /// PostgreSQL standing in for Redshift (tests), loading from the lake as Redshift does:
    /// the same manifests, version stages and statements, each `COPY ... MANIFEST` played by
    /// reading the manifest's files and copying their columns by position, as Redshift's
    /// COPY from Parquet maps them.
    PostgresStandInCopy,
}

/// The IAM role the COPY-playing stand-in names (it never reaches AWS).
const STAND_IN_ROLE: &str = "arn:aws:iam::000000000000:role/stand-in";

/// One step of copying a load's files into its stage.
enum CopyStep {
    /// Statements run as they are.
    Sql(String),
    /// `sql`, a `COPY ... MANIFEST` of manifest group `group` into `stage`.
    Copy {
        stage: String,
        group: usize,
        sql: String,
    },
}

pub struct Redshift {
    pg: Postgres,
    staging: Staging,
    /// The lake files of the next load (set by the engine before each load).
    files: Option<LakeFiles>,
    /// Upkeep after each load (ANALYZE, VACUUM).
    maintenance: Maintenance,
}

/// A column of an existing table: name and VARCHAR width (None: not a VARCHAR).
struct Existing {
    name: String,
    varchar: Option<usize>,
}

impl Redshift {
    /// Connects (`redshift://` or `postgres://` URL) and makes sure the ledger exists.
    pub fn connect(opts: &PgOptions, staging: Staging) -> Result<Redshift, WarehouseError> {
        let mut opts = opts.clone();
        if let Some(rest) = opts.url.strip_prefix("redshift://") {
            opts.url = format!("postgres://{rest}");
        }
        let pg = Postgres::connect(&opts)?;
        if !matches!(staging, Staging::LakeManifest { .. }) {
            // Redshift's JSON_PARSE, for the stand-ins only: of JSONB (rows over the
            // connection) and of text (the COPY-playing stand-in stages JSON as Redshift
            // does, in a VARCHAR).
            pg.batch(
                "json_parse",
                "CREATE OR REPLACE FUNCTION public.json_parse(jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS 'SELECT $1';\nCREATE OR REPLACE FUNCTION public.json_parse(character varying) RETURNS jsonb LANGUAGE sql IMMUTABLE AS 'SELECT $1::jsonb';",
            )?;
        }
        Ok(Redshift {
            pg,
            staging,
            files: None,
            maintenance: Maintenance::default(),
        })
    }

    /// Runs `maintenance` after each load (its table created once, here).
    pub fn with_maintenance(
        mut self,
        maintenance: Maintenance,
    ) -> Result<Redshift, WarehouseError> {
        if maintenance.is_on() {
            self.pg
                .batch("_sluice.maintenance", maintenance::MAINTENANCE_DDL)?;
        }
        self.maintenance = maintenance;
        Ok(self)
    }

    /// `ANALYZE COMPRESSION` of `target`'s table: each column's suggested encoding.
    pub fn analyze_compression(
        &mut self,
        target: &Target,
    ) -> Result<Vec<maintenance::Suggestion>, WarehouseError> {
        let tgt = format!("{}.{}", q(&target.schema), q(&target.table));
        let client = self.pg.client();
        let rows = self
            .pg
            .run(client.simple_query(&maintenance::analyze_compression(&tgt)))
            .map_err(pg_error(&target.display()))?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(maintenance::Suggestion {
                    column: r.get(1)?.to_string(),
                    encoding: r.get(2)?.to_string(),
                    reduction_pct: r.get(3).and_then(|p| p.parse().ok()).unwrap_or(0.0),
                }),
                _ => None,
            })
            .collect())
    }

    /// Applies the suggestions that shrink a column; returns the statements run.
    pub fn apply_encodings(
        &mut self,
        target: &Target,
        suggestions: &[maintenance::Suggestion],
    ) -> Result<Vec<String>, WarehouseError> {
        let tgt = format!("{}.{}", q(&target.schema), q(&target.table));
        let statements = maintenance::apply_encodings(&tgt, suggestions);
        for s in &statements {
            self.pg.batch(&target.display(), s)?;
        }
        Ok(statements)
    }

    /// The load's report with the upkeep that followed it.
    fn upkeep(&self, target: &Target, report: LoadReport) -> LoadReport {
        let mut report = report;
        if self.maintenance.is_on() {
            let done = self.pg.run(self.maintenance.after_load(
                self.pg.client(),
                &target.schema,
                &target.table,
                report.changes,
                self.stand_in(),
            ));
            report.maintenance.extend(done);
        }
        report
    }

    fn stand_in(&self) -> bool {
        !matches!(self.staging, Staging::LakeManifest { .. })
    }

    /// A staged column's type: Redshift's, or its PostgreSQL spelling on a stand-in.
    fn stage_type(&self, field: &arrow::datatypes::Field) -> Option<String> {
        let t = dialect::stage_type(field)?;
        Some(match self.stand_in() {
            true => postgres_spelling(&t),
            false => t,
        })
    }

    async fn existing_columns(
        client: &Client,
        target: &Target,
    ) -> Result<Vec<Existing>, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT CAST(column_name AS VARCHAR(128)), CAST(character_maximum_length AS INTEGER), CAST(data_type AS VARCHAR(128))
                   FROM information_schema.columns
                  WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&target.schema, &target.table],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let data_type: String = r.get(2);
                Existing {
                    name: r.get(0),
                    varchar: (data_type.contains("character varying"))
                        .then(|| r.get::<_, Option<i32>>(1).map(|n| n as usize))
                        .flatten(),
                }
            })
            .collect())
    }

    /// The table's layout: its columns mapped, the system columns (`_sluice_loaded_at`, the
    /// history columns) taken as they are.
    fn layout(target: &Target, columns: &Columns) -> Result<TableLayout, WarehouseError> {
        let system = system_columns(
            target.mode,
            target.deletes,
            target.key.is_empty(),
            &dialect::SYSTEM_TYPES,
        );
        TableLayout::resolve(&target.layout, |c| {
            columns
                .mapped_of(c)
                .map(String::from)
                .or_else(|| system.iter().find(|(n, _)| n == c).map(|(n, _)| n.clone()))
        })
        .map_err(|message| WarehouseError::Schema {
            table: target.display(),
            message,
        })
    }

    /// The table's distribution and sort key as Redshift has them.
    async fn current_layout(
        client: &Client,
        target: &Target,
    ) -> Result<CurrentLayout, tokio_postgres::Error> {
        let rows = client
            .query(dialect::CURRENT_LAYOUT, &[&target.schema, &target.table])
            .await?;
        let rows: Vec<dialect::LayoutRow> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        Ok(CurrentLayout::from_rows(&rows))
    }

    /// The statements that create the target or grow it to the load's needs: added columns
    /// (evolve), VARCHARs widened to the longest value, and the distribution and sort key
    /// altered to the configured layout where `current` differs (with what each changes).
    fn shape(
        &self,
        target: &Target,
        columns: &Columns,
        fit: &Fit,
        existing: Vec<Existing>,
        current: Option<&CurrentLayout>,
    ) -> Result<(Vec<String>, Vec<String>), WarehouseError> {
        let tgt = format!("{}.{}", q(&target.schema), q(&target.table));
        let stand_in = self.stand_in();
        let longest = |name: &str| fit.max_bytes.get(name).copied().unwrap_or(0);
        let data = columns.typed(target, |f| {
            column_type(f, longest(f.name())).map(|t| match stand_in {
                true => postgres_spelling(&t),
                false => t,
            })
        })?;
        let layout = Self::layout(target, columns)?;
        if existing.is_empty() {
            let mut create = data.clone();
            create.extend(system_columns(
                target.mode,
                target.deletes,
                target.key.is_empty(),
                &dialect::SYSTEM_TYPES,
            ));
            create.push((TRUNCATED.into(), "BOOLEAN NOT NULL DEFAULT false".into()));
            let layout = match stand_in {
                true => None,
                false => Some(&layout),
            };
            return Ok((
                vec![create_table(&target.schema, &tgt, &create, layout)],
                Vec::new(),
            ));
        }
        let names: Vec<String> = existing.iter().map(|e| e.name.clone()).collect();
        let mut statements: Vec<String> = shape_table(target, &tgt, names, &data, &[])?
            .statements
            .lines()
            .map(String::from)
            .collect();
        for e in &existing {
            let Some(width) = e.varchar else { continue };
            let Some(i) = columns.mapped.iter().position(|m| *m == e.name) else {
                continue;
            };
            let needed = varchar_size(longest(columns.fields[i].name()));
            if needed > width {
                tracing::info!(target = %target.display(), column = %e.name, from = width, to = needed, "widening VARCHAR");
                statements.push(widen(&tgt, &e.name, needed));
            }
        }
        let mut changed = Vec::new();
        if let Some(current) = current {
            let alters =
                alter_layout(&tgt, current, &layout).map_err(|message| WarehouseError::Schema {
                    table: target.display(),
                    message,
                })?;
            for (statement, what) in alters {
                tracing::info!(target = %target.display(), change = %what, "altering the table's layout");
                statements.push(statement);
                changed.push(format!("layout: {what}"));
            }
        }
        Ok((statements, changed))
    }

    /// The first statements of a load's transaction: Redshift has no row locks, so the whole
    /// ledger is locked (`LOCK`), then the target's row is checked ([`Target::check_ledger`]).
    async fn lock_ledger(
        client: &Client,
        target: &Target,
        planned: Option<i64>,
    ) -> Result<(), WarehouseError> {
        let e = pg_error("_sluice.ledger");
        client
            .batch_execute("LOCK _sluice.ledger;")
            .await
            .map_err(&e)?;
        let row = ledger_rows_where(client, Some(target), false)
            .await
            .map_err(&e)?;
        target.check_ledger(planned, row.first())
    }

    /// The apply statements and the ledger move, in the load's transaction.
    async fn apply(
        client: &Client,
        target: &Target,
        columns: &Columns,
        keys: &[String],
        fit: &Fit,
        now: &str,
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let upto = ledger.to;
        let name = target.display();
        let e = pg_error(&name);
        let tgt = format!("{}.{}", q(&target.schema), q(&target.table));
        let changes: i64 = client
            .query_one(format!("SELECT count(*) FROM {STAGE}").as_str(), &[])
            .await
            .map_err(&e)?
            .get(0);
        let values: Vec<String> = columns
            .fields
            .iter()
            .zip(&columns.mapped)
            .map(|(f, m)| match Bound::of(f) {
                Bound::Json => format!("JSON_PARSE({})", q(m)),
                _ => q(m),
            })
            .collect();
        let extra = [(TRUNCATED.to_string(), truncated_flag(&fit.truncated))];
        let apply = Apply {
            target: &tgt,
            stage: STAGE,
            work: WORK,
            keys,
            columns: &columns.mapped,
            now,
            values: &values,
            extra: &extra,
        };
        let mut sql = match target.mode {
            LoadMode::Append => apply.append(),
            LoadMode::Merge => apply.merge(target.deletes),
            LoadMode::Replace if changes == 0 => String::new(),
            LoadMode::Replace => apply.replace(),
            LoadMode::History => apply.history(),
        };
        if ledger.image && target.mode == LoadMode::Merge {
            sql = format!("DELETE FROM {tgt};\n{sql}");
        }
        client
            .batch_execute(&format!("{sql}\nDROP TABLE {STAGE};"))
            .await
            .map_err(&e)?;
        let [update, insert] = ledger_upsert(now);
        move_ledger(client, &[&update, &insert], target, upto, changes)
            .await
            .map_err(&e)
    }

    /// Redshift: the lake's files through a manifest.
    fn load_from_lake(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        iam_role: &str,
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let upto = ledger.to;
        let name = target.display();
        let input = |message: String| WarehouseError::Input {
            table: name.clone(),
            message,
        };
        let files = self.files.take().ok_or_else(|| {
            input("no lake files were given for this load (Redshift copies them from S3)".into())
        })?;
        let columns = Columns::new(schema, MAX_IDENTIFIER);
        let keys = columns.keys(target)?;
        let bounds: HashMap<String, Bound> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), Bound::of(f)))
            .collect();
        let stage_columns = columns.staged(schema, target, |f| self.stage_type(f))?;
        let load_id = format!(
            "{}.{}-{}-{}",
            target.schema,
            target.table,
            upto.seq,
            chrono::Utc::now().timestamp_micros()
        );
        let manifest = self
            .pg
            .run(lakecopy::write_manifest(&files, &bounds, &load_id))
            .map_err(input)?;
        tracing::info!(target = %name, files = manifest.files, rewritten = manifest.rewritten, truncated = manifest.fit.truncated.len(), "copying the lake's files into Redshift");
        // No files (nothing in the range): an empty stage, and the ledger still moves.
        let steps = self
            .copies(target, &columns, schema, &manifest, iam_role)
            .inspect_err(|_| self.pg.run(manifest.remove(&files.store)))?;
        let now = load_time(chrono::Utc::now());
        let client = self.pg.client();
        let result = self.pg.run(async {
            let e = pg_error(&name);
            let existing = Self::existing_columns(client, target).await.map_err(&e)?;
            // A new table is created inside the transaction (with its ledger row); columns
            // are added and widened before it, which Redshift refuses inside one.
            let create = existing.is_empty();
            // PostgreSQL has no distribution or sort keys to read.
            let current = match create || self.stand_in() {
                true => None,
                false => Some(Self::current_layout(client, target).await.map_err(&e)?),
            };
            let (shape, changed) =
                self.shape(target, &columns, &manifest.fit, existing, current.as_ref())?;
            if !create {
                for statement in &shape {
                    client.batch_execute(statement).await.map_err(&e)?;
                }
            }
            in_transaction(client, &name, async {
                Self::lock_ledger(client, target, ledger.from).await?;
                if create {
                    for statement in &shape {
                        client.batch_execute(statement).await.map_err(&e)?;
                    }
                }
                client
                    .batch_execute(&create_stage(STAGE, &stage_columns))
                    .await
                    .map_err(&e)?;
                for step in &steps {
                    match step {
                        CopyStep::Sql(sql) => client.batch_execute(sql).await.map_err(&e)?,
                        CopyStep::Copy { stage, group, .. } if self.stand_in() => {
                            let group = &manifest.groups[*group];
                            Self::play_copy(client, &files, stage, group, &name).await?
                        }
                        CopyStep::Copy { sql, .. } => {
                            client.batch_execute(sql).await.map_err(&e)?
                        }
                    }
                }
                // The files are whole commits; the load is a range of seqs.
                client
                    .batch_execute(&trim_stage(STAGE, files.after, upto.seq))
                    .await
                    .map_err(&e)?;
                let mut report =
                    Self::apply(client, target, &columns, &keys, &manifest.fit, &now, ledger)
                        .await?;
                report.maintenance = changed;
                Ok(report)
            })
            .await
        });
        self.pg.run(manifest.remove(&files.store));
        result
    }

    /// The COPY statements of a load: its files straight into the stage when they all have
    /// the stage's columns; else each schema version's files into a stage of their own
    /// columns first (COPY from Parquet maps columns by position), then into the stage.
    fn copies(
        &self,
        target: &Target,
        columns: &Columns,
        schema: &SchemaRef,
        manifest: &lakecopy::Manifest,
        iam_role: &str,
    ) -> Result<Vec<CopyStep>, WarehouseError> {
        let input = |message: String| WarehouseError::Input {
            table: target.display(),
            message,
        };
        let stage_names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
        match &manifest.groups[..] {
            [] => Ok(Vec::new()),
            [one]
                if one
                    .columns
                    .iter()
                    .map(|f| f.name())
                    .eq(stage_names.iter().copied()) =>
            {
                let nested = has_nested(schema.fields().iter().map(|f| f.as_ref()));
                Ok(vec![CopyStep::Copy {
                    stage: STAGE.to_string(),
                    group: 0,
                    sql: copy_manifest(STAGE, &one.url, iam_role, nested).map_err(input)?,
                }])
            }
            groups => {
                let mut steps = Vec::new();
                for (k, g) in groups.iter().enumerate() {
                    // Each file column as the lake schema names and types it (its JSON mark
                    // included), at the file's own type.
                    let fields: Vec<arrow::datatypes::Field> = g
                        .columns
                        .iter()
                        .map(|f| {
                            let own = schema.field_with_name(f.name()).map_err(|_| {
                                input(format!(
                                    "a lake file of this load has column `{}`, which the lake table's schema lacks",
                                    f.name()
                                ))
                            })?;
                            Ok(own.clone().with_data_type(f.data_type().clone()))
                        })
                        .collect::<Result<_, WarehouseError>>()?;
                    let version_schema = Arc::new(arrow::datatypes::Schema::new(fields.clone()));
                    let cols = columns.staged(&version_schema, target, |f| self.stage_type(f))?;
                    let stage = q(&format!("_sluice_stage_v{k}"));
                    let copy = copy_manifest(&stage, &g.url, iam_role, has_nested(&fields))
                        .map_err(input)?;
                    steps.push(CopyStep::Sql(create_stage(&stage, &cols)));
                    steps.push(CopyStep::Copy {
                        stage: stage.clone(),
                        group: k,
                        sql: copy,
                    });
                    steps.push(CopyStep::Sql(insert_version(STAGE, &stage, &cols)));
                }
                Ok(steps)
            }
        }
    }

    /// The COPY-playing stand-in's `COPY stage FROM '<manifest>' ... FORMAT AS PARQUET
    /// MANIFEST`: reads the manifest from the lake's store, and each file it lists (one at a
    /// time) into `stage` by column position, as Redshift does; a file whose columns do not
    /// line up with the stage's fails as it would there.
    async fn play_copy(
        client: &Client,
        files: &LakeFiles,
        stage: &str,
        group: &lakecopy::CopyGroup,
        name: &str,
    ) -> Result<(), WarehouseError> {
        let input = |message: String| WarehouseError::Input {
            table: name.to_string(),
            message,
        };
        for path in lakecopy::manifest_files(files, group)
            .await
            .map_err(input)?
        {
            let batches = lakecopy::read_file(&files.store, &path)
                .await
                .map_err(input)?;
            let Some(first) = batches.first() else {
                continue;
            };
            // By arrow type alone, as Redshift reads Parquet (the lake's JSON mark aside).
            let schema = Arc::new(arrow::datatypes::Schema::new(
                first
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_metadata(Default::default()))
                    .collect::<Vec<_>>(),
            ));
            let copied: Vec<usize> = (0..schema.fields().len()).collect();
            let copy = format!("COPY {stage} FROM STDIN (FORMAT binary)");
            let mut rows = batches.into_iter().map(Ok::<_, String>);
            Postgres::copy_changes(client, &copy, &schema, &copied, &mut rows, name).await?;
        }
        Ok(())
    }

    /// The PostgreSQL stand-in: rows sent over the connection by binary COPY, fitted to
    /// Redshift's widths on the way, into the same staging table. They are the load's range
    /// already, so the stage needs no trimming.
    fn load_over_connection(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let name = target.display();
        let columns = Columns::new(schema, MAX_IDENTIFIER);
        let keys = columns.keys(target)?;
        let bounds: Vec<Bound> = schema.fields().iter().map(|f| Bound::of(f)).collect();
        let stage_columns = columns.staged(schema, target, postgres_type)?;
        let copied: Vec<usize> = (0..schema.fields().len()).collect();
        let list: Vec<String> = stage_columns.iter().map(|(n, _)| q(n)).collect();
        let copy = format!(
            "COPY {STAGE} ({}) FROM STDIN (FORMAT binary)",
            list.join(", ")
        );
        let now = load_time(chrono::Utc::now());
        let client = self.pg.client();
        let this = &*self;
        self.pg.run(in_transaction(client, &name, async {
            let e = pg_error(&name);
            Self::lock_ledger(client, target, ledger.from).await?;
            client
                .batch_execute(&create_stage(STAGE, &stage_columns))
                .await
                .map_err(&e)?;
            let mut fit = Fit::default();
            {
                let mut fitted = batches.map(|b| b.and_then(|b| fit.fit(&b, &bounds)));
                Postgres::copy_changes(client, &copy, schema, &copied, &mut fitted, &name).await?;
            }
            let existing = Self::existing_columns(client, target).await.map_err(&e)?;
            for statement in this.shape(target, &columns, &fit, existing, None)?.0 {
                client.batch_execute(&statement).await.map_err(&e)?;
            }
            Self::apply(client, target, &columns, &keys, &fit, &now, ledger).await
        }))
    }
}

/// Whether any of `fields` is a list, struct or map (copied with `SERIALIZETOJSON`).
fn has_nested<'a>(fields: impl IntoIterator<Item = &'a arrow::datatypes::Field>) -> bool {
    fields.into_iter().any(|f| Bound::of(f) == Bound::Nested)
}

/// A Redshift type as the PostgreSQL stand-in spells it.
fn postgres_spelling(redshift_type: &str) -> String {
    if redshift_type == "SUPER" {
        "JSONB".into()
    } else if redshift_type.starts_with("VARBYTE") {
        "BYTEA".into()
    } else {
        redshift_type.into()
    }
}

impl Warehouse for Redshift {
    fn ledger(&mut self, target: &Target) -> Result<Option<LedgerEntry>, WarehouseError> {
        self.pg.ledger(target)
    }

    fn ledger_rows(&mut self) -> Result<Vec<LedgerRow>, WarehouseError> {
        self.pg.ledger_rows()
    }

    fn columns(&mut self, target: &Target) -> Result<Vec<String>, WarehouseError> {
        self.pg.columns(target)
    }

    fn load(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let report = match self.staging.clone() {
            Staging::LakeManifest { iam_role } => {
                self.load_from_lake(target, schema, &iam_role, ledger)
            }
            Staging::PostgresStandIn => self.load_over_connection(target, schema, batches, ledger),
            Staging::PostgresStandInCopy => {
                self.load_from_lake(target, schema, STAND_IN_ROLE, ledger)
            }
        }?;
        Ok(self.upkeep(target, report))
    }

    fn describe(&self) -> String {
        match self.staging {
            Staging::LakeManifest { .. } => self.pg.describe().replacen("postgres", "redshift", 1),
            Staging::PostgresStandIn | Staging::PostgresStandInCopy => {
                format!("redshift dialect on {}", self.pg.describe())
            }
        }
    }

    fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, WarehouseError> {
        self.pg.query(sql)
    }

    fn wants_lake_files(&self) -> bool {
        !matches!(self.staging, Staging::PostgresStandIn)
    }

    fn use_lake_files(&mut self, files: LakeFiles) {
        self.files = Some(files);
    }

    /// One statement at a time: Redshift runs external DDL only outside a transaction.
    fn expose(&mut self, exposure: &Exposure) -> Result<(), WarehouseError> {
        for s in &exposure.statements {
            self.pg.batch("(expose)", s)?;
        }
        Ok(())
    }

    fn truncated_rows(&mut self, target: &Target) -> Result<u64, WarehouseError> {
        let sql = format!(
            "SELECT count(*) FROM {}.{} WHERE {}",
            q(&target.schema),
            q(&target.table),
            q(TRUNCATED)
        );
        let n: i64 = self
            .pg
            .run(self.pg.client().query_one(sql.as_str(), &[]))
            .map_err(pg_error(&target.display()))?
            .get(0);
        Ok(n as u64)
    }
}
