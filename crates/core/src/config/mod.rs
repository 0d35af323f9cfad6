//! `sluice.toml`: the one config file (DESIGN.md, "The user-facing contract").
//!
//! Parsing is strict (unknown keys are errors) and [`Config::parse`] validates everything that
//! can be checked without I/O, reporting every problem at once, each naming its field and, where
//! it can be found, its line. Checks that need the network or the disk belong to `sluice check`.
//!
//! Relative paths (lake folder, DuckDB file, local file sources) are relative to the directory
//! holding the config file, so a project folder can be moved as a whole.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;
use crate::types::parse_type;

mod checks;
mod events;
mod files;
mod mongodb;
mod mysql;
mod postgres;
mod redshift_iam;
mod reports;
mod source;
mod transforms;

pub use checks::{Check, CheckAction, CheckConfig, CheckKind, Literal, Rule};
pub use events::{
    EventsConfig, DEFAULT_DEDUPE_SECS, DEFAULT_EVENTS_BODY_BYTES, DEFAULT_EVENTS_BUFFER_MB,
    DEFAULT_EVENTS_TABLE,
};
pub use files::FilesConfig;
pub use mongodb::{MongodbConfig, DEFAULT_SAMPLE_DOCS};
pub use mysql::MysqlConfig;
pub use postgres::PostgresConfig;
pub use redshift_iam::{Endpoint as RedshiftEndpoint, IamAuth as RedshiftIamAuth};
pub use reports::{OutputFile, ReportConfig, DEFAULT_REPORT_SCHEDULE};
pub use source::{OnPositionLost, Shared, SourceConfig, Tuning};
pub use transforms::{
    TransformConfig, TransformsConfig, DEFAULT_TRANSFORM_POLL_SECS, TRANSFORMS_SOURCE,
};

/// Default lake location when `[lake]` is absent: `./lake` beside the config file.
pub const DEFAULT_LAKE: &str = "lake";
/// The `vacuum` options of a Redshift warehouse.
pub const VACUUM_OPTIONS: &[&str] = &["delete only", "sort only", "full"];

/// Default embedded warehouse when no `[warehouses]` is configured.
pub const DEFAULT_WAREHOUSE_NAME: &str = "local";
pub const DEFAULT_DUCKDB_PATH: &str = "warehouse.duckdb";
/// DuckDB would take 80% of RAM; a sync shares the machine, and loads spill to the database
/// file beyond this, so memory stays flat however large the input.
pub const DEFAULT_DUCKDB_MEMORY: &str = "512MB";
/// Large enough that a nightly drop loads in one transaction, small enough that a backlog of
/// any size loads with flat memory and keeps its progress across a crash.
pub const DEFAULT_CHANGES_PER_TRANSACTION: i64 = 4_000_000;
/// PostgreSQL streams a load (COPY) and spills on the server, so its memory does not grow with
/// the transaction: larger transactions there only save per-transaction work.
pub const DEFAULT_POSTGRES_CHANGES_PER_TRANSACTION: i64 = 50_000_000;
/// Rows sampled from each of the first files to infer a schema: enough to see past a few
/// leading nulls, small enough to keep a first sync quick.
pub const DEFAULT_SAMPLE_ROWS: usize = 1000;
/// Levels of objects `nested = "flatten"` turns into `parent__child` columns.
pub const DEFAULT_MAX_DEPTH: usize = 5;
/// How many files the inference samples, so one odd first file does not decide the types.
pub const DEFAULT_SAMPLE_FILES: usize = 5;
/// Files landed in one lake commit, at most (`files_per_commit`).
pub const DEFAULT_FILES_PER_COMMIT: usize = 1000;
/// A local file modified within this many seconds may still be being written: sluice waits
/// until it has been left alone this long (and skips it, to take it next sync, if it changed
/// meanwhile). Long enough for a writer's pauses between buffers, short enough for a sync.
pub const DEFAULT_SETTLE_SECS: u64 = 2;
/// Snapshot chunks read at once: one per core here, each with its own connection.
pub const DEFAULT_SNAPSHOT_PARALLELISM: usize = 2;
/// Rows per snapshot chunk: a crash re-reads at most this many per reader, and a chunk's
/// Arrow data (tens of MB for wide rows) is what each reader holds.
pub const DEFAULT_CHUNK_ROWS: u64 = 100_000;
/// CDC commits to the lake at least this often (ms): bounds end-to-end latency.
pub const DEFAULT_BATCH_MAX_MS: u64 = 1000;
/// CDC commits once this many changes are buffered: bounds memory under bursts.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 20_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the lake lives; default `./lake`.
    #[serde(default)]
    pub lake: LakeConfig,
    /// Named warehouses; default one embedded DuckDB file named `local`.
    #[serde(default)]
    pub warehouses: BTreeMap<String, WarehouseConfig>,
    /// Named sources.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[transforms.NAME]` as written; once parsed they are the source named
    /// [`TRANSFORMS_SOURCE`] in `sources` (this map is then empty).
    #[serde(default)]
    pub transforms: BTreeMap<String, TransformConfig>,
    /// `[reports.NAME]`: lake queries written as files on a schedule.
    #[serde(default)]
    pub reports: BTreeMap<String, ReportConfig>,
    /// The daemon (`sluice serve`).
    pub serve: Option<ServeConfig>,
    /// Run history store.
    pub state: Option<StateConfig>,
    /// Alert webhooks.
    #[serde(default)]
    pub alerts: Vec<AlertConfig>,
    /// Directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// A folder, `file://` URL or `s3://bucket/prefix`.
    #[serde(default = "default_lake")]
    pub url: String,
    /// S3 server-side encryption: `"aws:kms"` or `"AES256"`; passed to every write.
    pub sse: Option<String>,
    /// KMS key for `sse = "aws:kms"`.
    pub sse_kms_key_id: Option<String>,
    /// S3-compatible endpoint (MinIO, a local test server); default AWS.
    pub endpoint: Option<String>,
    /// AWS region; default from `AWS_REGION`.
    pub region: Option<String>,
    /// Compression of the lake's Parquet data files: zstd (default), snappy (for engines
    /// that want it), lz4, gzip or none.
    pub compression: Option<String>,
    /// Target size of a lake data file in MiB (default 64): the writer writes a file out each
    /// time it buffers this much, and `sluice lake compact` rewrites smaller files into files
    /// of this size.
    pub file_mb: Option<u64>,
}

/// Compressions of lake data files (`[lake] compression`).
pub const LAKE_COMPRESSIONS: &[&str] = &["zstd", "snappy", "lz4", "gzip", "none"];
/// Target size of a lake data file, MiB (`[lake] file_mb`).
pub const DEFAULT_LAKE_FILE_MB: u64 = 64;

fn default_lake() -> String {
    DEFAULT_LAKE.into()
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            url: default_lake(),
            sse: None,
            sse_kms_key_id: None,
            endpoint: None,
            region: None,
            compression: None,
            file_mb: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum WarehouseConfig {
    Duckdb {
        /// The database file; default `warehouse.duckdb` beside the config.
        #[serde(default = "default_duckdb_path")]
        path: String,
        /// DuckDB's memory limit (e.g. `"1GB"`); default [`DEFAULT_DUCKDB_MEMORY`].
        memory_limit: Option<String>,
        /// Changes applied per warehouse transaction when a backlog is larger; default
        /// [`DEFAULT_CHANGES_PER_TRANSACTION`].
        max_changes_per_transaction: Option<i64>,
        /// Move the views `sluice expose` makes (schemas `lake_SOURCE`) to the lake's current
        /// version after each sync that landed something.
        #[serde(default)]
        expose: bool,
    },
    Postgres {
        /// `postgres://user@host:5432/database` (the password goes in `password`).
        url: String,
        password: Option<Secret>,
        /// TLS: disable | prefer (default) | require | verify-ca | verify-full.
        ssl_mode: Option<String>,
        /// CA certificate (PEM) for verify-ca / verify-full.
        ssl_ca: Option<String>,
        /// As for DuckDB; default [`DEFAULT_POSTGRES_CHANGES_PER_TRANSACTION`].
        max_changes_per_transaction: Option<i64>,
        /// Refused: PostgreSQL cannot read the lake's Parquet files.
        #[serde(default)]
        expose: bool,
    },
    /// Loaded by `COPY ... FORMAT AS PARQUET MANIFEST` straight from the lake's files on S3.
    Redshift {
        /// `redshift://user@cluster.abc.us-east-1.redshift.amazonaws.com:5439/dev` (or
        /// `postgres://`; the password goes in `password`). A Serverless workgroup's endpoint
        /// (`workgroup.123456789012.us-east-1.redshift-serverless.amazonaws.com`) works alike.
        url: String,
        password: Option<Secret>,
        /// Sign in with temporary credentials from IAM instead of a password: the provisioned
        /// cluster's `GetClusterCredentials` for the URL's user, or a Serverless workgroup's
        /// `GetCredentials` (for the caller's IAM identity), fetched at every connect.
        #[serde(default)]
        iam_auth: bool,
        /// With `iam_auth`: the cluster, where the URL's host is not the cluster's AWS
        /// endpoint (default: the host's first label) ...
        cluster_id: Option<String>,
        /// ... or the Serverless workgroup (default: the first label of a
        /// `redshift-serverless` host) ...
        workgroup: Option<String>,
        /// ... and its region (default: the endpoint's, else the AWS SDK's own).
        region: Option<String>,
        /// With `iam_auth` on a provisioned cluster: groups the user joins for the session,
        /// and whether a missing user is created.
        #[serde(default)]
        db_groups: Vec<String>,
        #[serde(default)]
        auto_create_user: bool,
        /// The IAM role Redshift assumes to read the lake (`arn:aws:iam::123456789012:role/x`).
        iam_role: String,
        /// TLS, as for PostgreSQL; default prefer.
        ssl_mode: Option<String>,
        ssl_ca: Option<String>,
        /// As for DuckDB; default [`DEFAULT_POSTGRES_CHANGES_PER_TRANSACTION`].
        max_changes_per_transaction: Option<i64>,
        /// As for DuckDB (Spectrum views over the lake on S3).
        #[serde(default)]
        expose: bool,
        /// ANALYZE a table once this many changes were loaded into it since sluice last
        /// analyzed it (default: never; Redshift's automatic analyze).
        analyze_after_changes: Option<u64>,
        /// VACUUM after loads: "delete only" | "sort only" | "full" (default: never) ...
        vacuum: Option<String>,
        /// ... when sluice's last VACUUM of the table is this many hours old (default 24).
        vacuum_every_hours: Option<u64>,
    },
}

/// A Redshift warehouse's sign-in problems: a password beside `iam_auth`, IAM keys without
/// it, both a cluster and a workgroup, no cluster or workgroup to ask for credentials, or
/// provisioned-only keys on a workgroup.
fn redshift_auth_errors(
    auth: &RedshiftIamAuth,
    password: bool,
    iam_auth: bool,
) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    let iam_keys = [
        ("cluster_id", auth.cluster_id.is_some()),
        ("workgroup", auth.workgroup.is_some()),
        ("region", auth.region.is_some()),
        ("db_groups", !auth.db_groups.is_empty()),
        ("auto_create_user", auth.auto_create_user),
    ];
    let set = |k: &str| iam_keys.iter().any(|(name, on)| *name == k && *on);
    if !iam_auth {
        for (key, on) in iam_keys {
            if on {
                errs.push((key, "only applies with `iam_auth = true`".into()));
            }
        }
        return errs;
    }
    if password {
        errs.push((
            "password",
            "is not used with `iam_auth = true` (sluice signs in with temporary IAM credentials): remove one".into(),
        ));
    }
    if set("cluster_id") && set("workgroup") {
        errs.push((
            "workgroup",
            "names a Serverless workgroup, but `cluster_id` names a provisioned cluster: keep one"
                .into(),
        ));
    } else if let Err(message) = auth.endpoint() {
        errs.push(("iam_auth", message));
    }
    let serverless = auth.is_serverless();
    if serverless {
        for key in ["db_groups", "auto_create_user"] {
            if set(key) {
                errs.push((
                    key,
                    "applies to provisioned clusters only (a Serverless workgroup signs in the caller's IAM identity)".into(),
                ));
            }
        }
    }
    errs
}

/// A database URL's problems: not one of `schemes`, a password in it, no database named.
/// `example` is the URL up to the database (`mysql://user@host:3306`).
fn database_url_errors(url: &str, schemes: &[&str], example: &str) -> Vec<(&'static str, String)> {
    match url::Url::parse(url) {
        Ok(u) if schemes.contains(&u.scheme()) => {
            let mut errs = Vec::new();
            if u.password().is_some() {
                errs.push((
                    "url",
                    "holds a password: put it in `password = { env = \"NAME\" }` or `{ file = \"PATH\" }`".into(),
                ));
            }
            if u.path().trim_matches('/').is_empty() {
                errs.push(("url", format!("names no database: {example}/DATABASE")));
            }
            errs
        }
        _ => vec![("url", format!("must look like {example}/database"))],
    }
}

/// What [`database_source_errors`] checks of a database source.
pub(super) struct DatabaseChecks<'a> {
    /// The kind, for messages (`MySQL`).
    pub kind: &'static str,
    pub mode: Mode,
    pub cursor: Option<&'a String>,
    pub load: Option<&'a LoadSpec>,
    pub tables: Option<&'a Tables>,
    pub snapshot_parallelism: Option<usize>,
    pub chunk_rows: Option<u64>,
}

/// The checks every database source shares: sizes of at least 1, tables named one by one, a
/// cursor for each table of an incremental read and none otherwise, replace by snapshot only.
/// `cursors` are the configured tables' cursor columns (None: a table without one).
pub(super) fn database_source_errors(
    c: DatabaseChecks,
    cursors: &[(String, Option<String>)],
) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let mut err = |key: &str, message: String| errs.push((key.to_string(), message));
    if c.snapshot_parallelism == Some(0) {
        err("snapshot_parallelism", "must be at least 1".into());
    }
    if c.chunk_rows == Some(0) {
        err("chunk_rows", "must be at least 1".into());
    }
    let names: Vec<&String> = match c.tables {
        Some(Tables::List(l)) => l.iter().collect(),
        Some(Tables::Map(m)) => m.keys().collect(),
        None => Vec::new(),
    };
    if let Some(p) = names.iter().find(|n| crate::pattern::is_pattern(n)) {
        err(
            "tables",
            format!(
                "`{p}`: name patterns select MongoDB collections; name {} tables one by one",
                c.kind
            ),
        );
    }
    for (table, cursor) in cursors {
        if c.mode == Mode::Incremental && cursor.is_none() {
            err(
                "cursor",
                format!("mode = \"incremental\" needs a cursor column for table `{table}` (cursor = \"updated_at\")"),
            );
        }
    }
    if c.mode != Mode::Incremental && c.cursor.is_some() {
        err(
            "cursor",
            "only mode = \"incremental\" reads by a cursor column".into(),
        );
    }
    // Replace makes a table the last complete image of the source table: a snapshot run.
    // Incremental reads and CDC bring changes, never a whole table.
    let replaces = |l: Option<&LoadSpec>| l.is_some_and(|l| l.modes().contains(&LoadMode::Replace));
    let table_replaces = match c.tables {
        Some(Tables::Map(m)) => m.values().any(|t| replaces(t.load.as_ref())),
        _ => false,
    };
    if c.mode != Mode::Snapshot && (replaces(c.load) || table_replaces) {
        err(
            "load",
            format!(
                "load = \"replace\" rebuilds a table from each complete snapshot, but mode = \"{}\" brings changes, not whole tables: use mode = \"snapshot\", or merge, append or history",
                match c.mode {
                    Mode::Cdc => "cdc",
                    _ => "incremental",
                }
            ),
        );
    }
    errs
}

/// Settings of a warehouse reached by PostgreSQL's protocol: the URL's shape (one of
/// `schemes`, as in `example`), no password in it, a known TLS mode.
fn validate_postgres(
    url: &str,
    schemes: &[&str],
    example: &str,
    ssl_mode: Option<&str>,
    has_ca: bool,
) -> Vec<(&'static str, String)> {
    let mut errs = database_url_errors(url, schemes, example);
    match ssl_mode {
        None | Some("disable") | Some("prefer") | Some("require") => {}
        Some("verify-ca") | Some("verify-full") => {
            if !has_ca {
                errs.push((
                    "ssl_ca",
                    "verify-ca and verify-full need ssl_ca = \"/path/root.crt\"".into(),
                ));
            }
        }
        Some(other) => errs.push((
            "ssl_mode",
            format!("`{other}` is not one of disable, prefer, require, verify-ca, verify-full"),
        )),
    }
    errs
}

fn default_duckdb_path() -> String {
    DEFAULT_DUCKDB_PATH.into()
}

impl WarehouseConfig {
    /// A Redshift warehouse's IAM sign-in settings with its URL's host, user and database
    /// (whether or not `iam_auth` is on), and the parsed URL; `None` for other warehouses
    /// or a URL that does not parse.
    pub fn redshift_iam(&self) -> Option<(RedshiftIamAuth, url::Url)> {
        let WarehouseConfig::Redshift {
            url,
            cluster_id,
            workgroup,
            region,
            db_groups,
            auto_create_user,
            ..
        } = self
        else {
            return None;
        };
        let (auth, url) = RedshiftIamAuth::from_url(url).ok()?;
        let auth = RedshiftIamAuth {
            cluster_id: cluster_id.clone(),
            workgroup: workgroup.clone(),
            region: region.clone(),
            db_groups: db_groups.clone(),
            auto_create_user: *auto_create_user,
            ..auth
        };
        Some((auth, url))
    }

    /// See `max_changes_per_transaction`.
    pub fn changes_per_transaction(&self) -> i64 {
        match self {
            WarehouseConfig::Duckdb {
                max_changes_per_transaction: Some(n),
                ..
            }
            | WarehouseConfig::Postgres {
                max_changes_per_transaction: Some(n),
                ..
            }
            | WarehouseConfig::Redshift {
                max_changes_per_transaction: Some(n),
                ..
            } => *n,
            WarehouseConfig::Postgres { .. } | WarehouseConfig::Redshift { .. } => {
                DEFAULT_POSTGRES_CHANGES_PER_TRANSACTION
            }
            _ => DEFAULT_CHANGES_PER_TRANSACTION,
        }
    }

    /// Whether syncs move this warehouse's views over the lake (`expose = true`).
    pub fn exposes(&self) -> bool {
        match self {
            WarehouseConfig::Duckdb { expose, .. }
            | WarehouseConfig::Postgres { expose, .. }
            | WarehouseConfig::Redshift { expose, .. } => *expose,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            WarehouseConfig::Duckdb { .. } => "duckdb",
            WarehouseConfig::Postgres { .. } => "postgres",
            WarehouseConfig::Redshift { .. } => "redshift",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Snapshot,
    Incremental,
    Cdc,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    Merge,
    Append,
    Replace,
    History,
}

impl LoadMode {
    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Merge => "merge",
            LoadMode::Append => "append",
            LoadMode::Replace => "replace",
            LoadMode::History => "history",
        }
    }
}

/// `load = "merge"` or several targets at once: `load = ["merge", "append"]` (the first mode
/// loads `<table>`, each further one `<table>_<mode>`, like seed 002's stage and history pair).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum LoadSpec {
    One(LoadMode),
    Many(Vec<LoadMode>),
}

impl LoadSpec {
    pub fn modes(&self) -> Vec<LoadMode> {
        match self {
            LoadSpec::One(m) => vec![*m],
            LoadSpec::Many(ms) => ms.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    #[default]
    Hard,
    Soft,
}

/// What the schema gate does with one kind of change between lake and warehouse.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// Stop loading the table until `sluice schema accept` (the lake goes on capturing).
    #[default]
    Halt,
    /// Add the nullable column (or variant column) to the warehouse table.
    Evolve,
    /// Keep the warehouse table's shape; count what is left out.
    Freeze,
}

impl SchemaPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SchemaPolicy::Halt => "halt",
            SchemaPolicy::Evolve => "evolve",
            SchemaPolicy::Freeze => "freeze",
        }
    }
}

/// `schema_changes = "halt"`, or per kind:
/// `schema_changes = { new_column = "evolve", incompatible_type = "halt" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChangesSpec {
    All(SchemaPolicy),
    Kinds(SchemaKindPolicies),
}

// By hand rather than `untagged`, so a mistake is named ("unknown variant `stop`", "unknown
// field `new_col`") instead of "did not match any variant".
impl<'de> Deserialize<'de> for SchemaChangesSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer};
        struct Spec;
        impl<'de> de::Visitor<'de> for Spec {
            type Value = SchemaChangesSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"halt\", \"evolve\" or \"freeze\", or a table of them by kind (new_table, new_column, dropped_column, widened_type, incompatible_type)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SchemaChangesSpec, E> {
                SchemaPolicy::deserialize(s.into_deserializer()).map(SchemaChangesSpec::All)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<SchemaChangesSpec, A::Error> {
                SchemaKindPolicies::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(SchemaChangesSpec::Kinds)
            }
        }
        d.deserialize_any(Spec)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SchemaKindPolicies {
    pub new_table: Option<SchemaPolicy>,
    pub new_column: Option<SchemaPolicy>,
    pub dropped_column: Option<SchemaPolicy>,
    pub widened_type: Option<SchemaPolicy>,
    pub incompatible_type: Option<SchemaPolicy>,
}

/// The resolved policy of each kind of change for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaPolicies {
    pub new_table: SchemaPolicy,
    pub new_column: SchemaPolicy,
    pub dropped_column: SchemaPolicy,
    pub widened_type: SchemaPolicy,
    pub incompatible_type: SchemaPolicy,
}

impl Default for SchemaPolicies {
    /// New tables are created; every other change halts the table.
    fn default() -> Self {
        SchemaPolicies {
            new_table: SchemaPolicy::Evolve,
            new_column: SchemaPolicy::Halt,
            dropped_column: SchemaPolicy::Halt,
            widened_type: SchemaPolicy::Halt,
            incompatible_type: SchemaPolicy::Halt,
        }
    }
}

impl SchemaPolicies {
    /// Every policy the same, new tables included.
    pub fn all(p: SchemaPolicy) -> SchemaPolicies {
        SchemaPolicies {
            new_table: p,
            new_column: p,
            dropped_column: p,
            widened_type: p,
            incompatible_type: p,
        }
    }

    /// These policies with `spec` applied over them. A single word sets every kind of change
    /// to a table's columns; `new_table` only changes when named, so `"halt"` still lets a
    /// first sync create its tables (DESIGN.md: new tables get their warehouse table).
    pub fn with(mut self, spec: Option<&SchemaChangesSpec>) -> SchemaPolicies {
        match spec {
            None => {}
            Some(SchemaChangesSpec::All(p)) => {
                self = SchemaPolicies {
                    new_table: self.new_table,
                    ..SchemaPolicies::all(*p)
                }
            }
            Some(SchemaChangesSpec::Kinds(k)) => {
                self.new_table = k.new_table.unwrap_or(self.new_table);
                self.new_column = k.new_column.unwrap_or(self.new_column);
                self.dropped_column = k.dropped_column.unwrap_or(self.dropped_column);
                self.widened_type = k.widened_type.unwrap_or(self.widened_type);
                self.incompatible_type = k.incompatible_type.unwrap_or(self.incompatible_type);
            }
        }
        self
    }

    pub fn of(&self, kind: crate::schema::ChangeKind) -> SchemaPolicy {
        use crate::schema::ChangeKind as K;
        match kind {
            K::NewTable => self.new_table,
            K::NewColumn => self.new_column,
            K::DroppedColumn => self.dropped_column,
            K::WidenedType => self.widened_type,
            K::IncompatibleType => self.incompatible_type,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Tsv,
    Json,
    Parquet,
    Orc,
}

/// What nested documents (JSON objects and arrays) become.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Nested {
    /// One column per top-level key; objects and arrays hold their JSON text.
    Json,
    /// Objects become `parent__child` columns down to `max_depth`; arrays stay JSON text.
    Flatten,
}

/// `tables = ["a", "b"]` selects tables; `[sources.x.tables.a]` selects and overrides.
#[derive(Debug)]
pub enum Tables {
    List(Vec<String>),
    Map(BTreeMap<String, TableConfig>),
}

// By hand rather than `untagged`, so a mistake inside a table's section is named ("unknown
// field `on`", "unknown variant `not_nul`") instead of "did not match any variant".
impl<'de> Deserialize<'de> for Tables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de;
        struct Spec;
        impl<'de> de::Visitor<'de> for Spec {
            type Value = Tables;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of table names, or a table of per-table sections")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<Tables, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(s)).map(Tables::List)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<Tables, A::Error> {
                BTreeMap::deserialize(de::value::MapAccessDeserializer::new(m)).map(Tables::Map)
            }
        }
        d.deserialize_any(Spec)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Key columns for merge and history; default: the source's own key.
    pub primary_key: Option<Vec<String>>,
    /// Cursor column for incremental mode.
    pub cursor: Option<String>,
    /// Overrides the source's `load`.
    pub load: Option<LoadSpec>,
    /// Overrides the source's `deletes`.
    pub deletes: Option<Deletes>,
    /// Overrides the source's `schema_changes` (kind by kind when given per kind).
    pub schema_changes: Option<SchemaChangesSpec>,
    /// Physical layout of the warehouse table, where the warehouse has one (Redshift).
    pub layout: Option<Layout>,
    /// Overrides the source's `warehouse` (transforms: each names its own).
    pub warehouse: Option<String>,
    /// MySQL/MariaDB: the table is this SELECT's result, read by snapshot or incremental
    /// mode like a table (seed 004's "custom SQL query").
    pub query: Option<String>,
    /// Data-quality checks, run on each load's new changes before the warehouse takes them.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

/// How a Redshift table is distributed, sorted and compressed (`[sources.x.tables.t.layout]`).
/// Columns are source column names.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// auto | even | all | key (key needs `distkey`); default auto, or key with a `distkey`.
    pub diststyle: Option<String>,
    pub distkey: Option<String>,
    /// Sort key columns, in order; any column of the warehouse table, `_sluice_loaded_at`
    /// and the history columns included.
    #[serde(default)]
    pub sortkey: Vec<String>,
    /// compound (default) | interleaved.
    pub sortkey_style: Option<String>,
    /// Per-column encodings (`{ l_comment = "zstd" }`); the other columns and the table get
    /// `ENCODE AUTO`.
    #[serde(default)]
    pub encode: BTreeMap<String, String>,
    /// The layout of the table one load mode writes (`[….layout.history]`), over this one:
    /// its distribution (diststyle and distkey) and its sort key (columns and style) replace
    /// this layout's when it sets them; its encodings are added, its own winning.
    pub merge: Option<Box<Layout>>,
    pub append: Option<Box<Layout>>,
    pub replace: Option<Box<Layout>>,
    pub history: Option<Box<Layout>>,
}

impl Layout {
    /// The overrides by mode, as `(mode, layout)`.
    pub fn overrides(&self) -> impl Iterator<Item = (LoadMode, &Layout)> {
        [
            (LoadMode::Merge, &self.merge),
            (LoadMode::Append, &self.append),
            (LoadMode::Replace, &self.replace),
            (LoadMode::History, &self.history),
        ]
        .into_iter()
        .filter_map(|(m, l)| l.as_deref().map(|l| (m, l)))
    }

    /// The layout of the table `mode` writes: this one with the mode's override over it.
    pub fn for_mode(&self, mode: LoadMode) -> Layout {
        let mut l = Layout {
            diststyle: self.diststyle.clone(),
            distkey: self.distkey.clone(),
            sortkey: self.sortkey.clone(),
            sortkey_style: self.sortkey_style.clone(),
            encode: self.encode.clone(),
            ..Layout::default()
        };
        let Some((_, o)) = self.overrides().find(|(m, _)| *m == mode) else {
            return l;
        };
        if o.diststyle.is_some() || o.distkey.is_some() {
            l.diststyle = o.diststyle.clone();
            l.distkey = o.distkey.clone();
        }
        if !o.sortkey.is_empty() || o.sortkey_style.is_some() {
            l.sortkey = o.sortkey.clone();
            l.sortkey_style = o.sortkey_style.clone();
        }
        l.encode.extend(o.encode.clone());
        l
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address of the HTTP API and /metrics (default 127.0.0.1:8080).
    pub listen: Option<String>,
    /// Bearer token the API asks for; required when `listen` is not a loopback address.
    pub token: Option<Secret>,
    /// A failing pass is tried again this many times (default 10) ...
    pub retries: Option<u32>,
    /// ... first after this many seconds (default 1), doubling ...
    pub retry_first_secs: Option<u64>,
    /// ... up to this many (default 300).
    pub retry_max_secs: Option<u64>,
}

impl ServeConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";

    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(Self::DEFAULT_LISTEN)
    }
}

/// Whether `listen` (`host:port`) binds only the loopback interface.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map(|(h, _)| h).unwrap_or(listen);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// A SQLite file (relative to the config) or `postgres://user@host:port/db`.
    pub url: String,
    /// PostgreSQL: the password, from env or a file.
    pub password: Option<Secret>,
    /// PostgreSQL TLS: disable | prefer (default) | require | verify-ca | verify-full.
    pub ssl_mode: Option<String>,
    pub ssl_ca: Option<String>,
    /// How long a serve process owns a source after its last heartbeat (default 30): another
    /// process sharing the state store takes the source over after this.
    pub lease_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    pub webhook: String,
    pub format: Option<String>,
}

/// One problem in the config: the field it concerns and, where found, its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has {} problem(s):",
            self.path.display(),
            self.errors.len()
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One table a source feeds, with its overrides resolved against the source's settings.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub source: String,
    pub table: String,
    pub primary_key: Vec<String>,
    pub loads: Vec<LoadMode>,
    pub deletes: Deletes,
    pub schema_changes: SchemaPolicies,
    pub warehouse: String,
    /// Cursor column (incremental mode).
    pub cursor: Option<String>,
    pub layout: Layout,
    /// Data-quality checks guarding the table's loads.
    pub checks: Vec<Check>,
}

impl TableSpec {
    /// The warehouse table each load mode writes: the first mode loads `<table>`, the others
    /// `<table>_<mode>`.
    pub fn targets(&self) -> Vec<(LoadMode, String)> {
        self.loads
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let name = if i == 0 {
                    self.table.clone()
                } else {
                    format!("{}_{}", self.table, m.name())
                };
                (*m, name)
            })
            .collect()
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: path.to_path_buf(),
            errors: vec![ConfigError {
                field: "(file)".into(),
                line: None,
                message: e.to_string(),
            }],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base).map_err(|errors| ConfigErrors {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Parses and validates config text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
        let syntax = |e: toml::de::Error| {
            // A secret written in place: its key and line, never its value.
            if e.message().contains(crate::secret::FORM) {
                if let Some((key, line)) = secret_in_place(text) {
                    return vec![ConfigError {
                        field: key,
                        line: Some(line),
                        message: e.message().to_string(),
                    }];
                }
            }
            // Errors inside a source (parsed by its `kind`) come without their place: the
            // value or key the message names finds it.
            let line = named_token(e.message())
                .and_then(|t| find_token(text, &t))
                .or_else(|| e.span().map(|s| text[..s.start].matches('\n').count() + 1));
            vec![ConfigError {
                field: "(syntax)".into(),
                line,
                message: e.message().to_string(),
            }]
        };
        // Keys a source's kind does not take are all named first; the strict parse that
        // follows would stop at the first of them.
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let mut stray = Vec::new();
        if let Some(toml::Value::Table(sources)) = table.get_mut("sources") {
            for (name, src) in sources.iter_mut() {
                if let toml::Value::Table(src) = src {
                    for (key, message) in source::strip_unknown_keys(src) {
                        stray.push(ConfigError {
                            field: format!("sources.{name}.{key}"),
                            line: None,
                            message,
                        });
                    }
                }
            }
        }
        let parsed = match stray.is_empty() {
            true => toml::from_str::<Config>(text).map_err(syntax),
            false => toml::Value::Table(table).try_into::<Config>().map_err(|e| {
                vec![ConfigError {
                    field: "(config)".into(),
                    line: None,
                    message: e.message().to_string(),
                }]
            }),
        };
        let mut config = match parsed {
            Ok(c) => c,
            Err(mut errs) => {
                stray.append(&mut errs);
                for e in &mut stray {
                    e.line = e.line.or_else(|| locate(text, &e.field));
                }
                return Err(stray);
            }
        };
        // Transforms are one source of their own, under a name no source may take.
        if config.sources.contains_key(TRANSFORMS_SOURCE) {
            stray.push(ConfigError {
                field: format!("sources.{TRANSFORMS_SOURCE}"),
                line: None,
                message: format!(
                    "`{TRANSFORMS_SOURCE}` is the source [transforms.NAME] sections make: name this source otherwise"
                ),
            });
        } else if !config.transforms.is_empty() {
            let transforms = TransformsConfig::new(std::mem::take(&mut config.transforms));
            config.sources.insert(
                TRANSFORMS_SOURCE.to_string(),
                SourceConfig::Transforms(transforms),
            );
        }
        config.base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir.to_path_buf()
        };
        if config.warehouses.is_empty() {
            config.warehouses.insert(
                DEFAULT_WAREHOUSE_NAME.into(),
                WarehouseConfig::Duckdb {
                    path: DEFAULT_DUCKDB_PATH.into(),
                    memory_limit: None,
                    max_changes_per_transaction: None,
                    expose: false,
                },
            );
        }
        let mut errors = stray;
        errors.extend(config.validate());
        for e in &mut errors {
            e.line = e.line.or_else(|| locate(text, &e.field));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |field: String, message: String| {
            errs.push(ConfigError {
                field,
                line: None,
                message,
            })
        };
        if self.lake.url.trim().is_empty() {
            err("lake.url".into(), "must not be empty".into());
        }
        if let Some(c) = &self.lake.compression {
            if !LAKE_COMPRESSIONS.contains(&c.as_str()) {
                err(
                    "lake.compression".into(),
                    format!("`{c}` is not one of {}", LAKE_COMPRESSIONS.join(", ")),
                );
            }
        }
        if let Some(mb) = self.lake.file_mb {
            if !(1..=4096).contains(&mb) {
                err(
                    "lake.file_mb".into(),
                    format!("{mb} MiB: a data file is 1 to 4096 MiB"),
                );
            }
        }
        if let Some(sse) = &self.lake.sse {
            if sse != "aws:kms" && sse != "AES256" {
                err(
                    "lake.sse".into(),
                    format!("`{sse}` is not one of \"aws:kms\", \"AES256\""),
                );
            }
        }
        if self.lake.sse_kms_key_id.is_some() && self.lake.sse.as_deref() != Some("aws:kms") {
            err(
                "lake.sse_kms_key_id".into(),
                "needs sse = \"aws:kms\"".into(),
            );
        }
        for (field, message) in reports::validate(&self.reports) {
            err(format!("reports.{field}"), message);
        }
        for (name, wh) in &self.warehouses {
            if wh.changes_per_transaction() < 1 {
                err(
                    format!("warehouses.{name}.max_changes_per_transaction"),
                    "must be at least 1".into(),
                );
            }
            match wh {
                WarehouseConfig::Duckdb { .. } => {}
                WarehouseConfig::Postgres {
                    url,
                    ssl_mode,
                    ssl_ca,
                    expose,
                    ..
                } => {
                    if *expose {
                        err(
                            format!("warehouses.{name}.expose"),
                            "PostgreSQL cannot read the lake's Parquet files: views over the lake need DuckDB or Redshift (load PostgreSQL with sync)".into(),
                        );
                    }
                    for (key, message) in validate_postgres(
                        url,
                        &["postgres", "postgresql"],
                        "postgres://user@host:5432",
                        ssl_mode.as_deref(),
                        ssl_ca.is_some(),
                    ) {
                        err(format!("warehouses.{name}.{key}"), message);
                    }
                }
                WarehouseConfig::Redshift {
                    url,
                    password,
                    ssl_mode,
                    ssl_ca,
                    iam_role,
                    vacuum,
                    vacuum_every_hours,
                    analyze_after_changes,
                    iam_auth,
                    ..
                } => {
                    let mut errs = validate_postgres(
                        url,
                        &["redshift", "postgres", "postgresql"],
                        "redshift://user@cluster.region.redshift.amazonaws.com:5439",
                        ssl_mode.as_deref(),
                        ssl_ca.is_some(),
                    );
                    if !iam_role.starts_with("arn:aws") || !iam_role.contains(":role/") {
                        errs.push((
                            "iam_role",
                            format!("`{iam_role}` is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"),
                        ));
                    }
                    match (vacuum.as_deref(), vacuum_every_hours) {
                        (Some(v), _) if !VACUUM_OPTIONS.contains(&v) => errs.push((
                            "vacuum",
                            format!("`{v}` is not one of {}", VACUUM_OPTIONS.join(", ")),
                        )),
                        (None, Some(_)) => errs.push((
                            "vacuum_every_hours",
                            "says when to VACUUM, but `vacuum` is not set (\"delete only\", \"sort only\" or \"full\")".into(),
                        )),
                        _ => {}
                    }
                    if let Some((auth, _)) = wh.redshift_iam() {
                        errs.extend(redshift_auth_errors(&auth, password.is_some(), *iam_auth));
                    }
                    if *analyze_after_changes == Some(0) {
                        errs.push((
                            "analyze_after_changes",
                            "must be at least 1 (leave it out for Redshift's own automatic analyze)".into(),
                        ));
                    }
                    if !self.lake.url.starts_with("s3://") {
                        errs.push((
                            "kind",
                            format!(
                                "Redshift copies the lake's files from S3, but lake.url is `{}`: put the lake on s3://",
                                self.lake.url
                            ),
                        ));
                    }
                    for (key, message) in errs {
                        err(format!("warehouses.{name}.{key}"), message);
                    }
                }
            }
        }
        if let Some(serve) = &self.serve {
            let listen = serve.listen();
            if listen.parse::<std::net::SocketAddr>().is_err() && !listen.starts_with("localhost:")
            {
                err(
                    "serve.listen".into(),
                    format!("`{listen}` is not an address: write host:port, e.g. 127.0.0.1:8080"),
                );
            } else if !is_loopback(listen) && serve.token.is_none() {
                err(
                    "serve.token".into(),
                    format!("`{listen}` is reachable from other machines: set token = {{ env = \"SLUICE_TOKEN\" }} (the API and /metrics then ask for it)"),
                );
            }
        }
        let listen = self
            .serve
            .as_ref()
            .map(ServeConfig::listen)
            .unwrap_or(ServeConfig::DEFAULT_LISTEN);
        for (name, src) in &self.sources {
            if let Some(events) = src.as_events() {
                if events.token.is_none() && !is_loopback(listen) {
                    err(
                        format!("sources.{name}.token"),
                        format!("serve listens on `{listen}`, reachable from other machines: set token = {{ env = \"NAME\" }} (clients send it as Authorization: Bearer …)"),
                    );
                }
            }
        }
        if let Some(state) = &self.state {
            if state.lease_secs == Some(0) {
                err("state.lease_secs".into(), "must be at least 1".into());
            }
        }
        for (i, a) in self.alerts.iter().enumerate() {
            if !matches!(a.format.as_deref(), None | Some("json") | Some("slack")) {
                err(
                    format!("alerts[{i}].format"),
                    "must be \"json\" or \"slack\"".into(),
                );
            }
            if !(a.webhook.starts_with("http://") || a.webhook.starts_with("https://")) {
                err(
                    format!("alerts[{i}].webhook"),
                    "must be an http:// or https:// URL".into(),
                );
            }
        }
        if self.sources.is_empty() {
            err(
                "sources".into(),
                "no sources configured: add a [sources.NAME] section".into(),
            );
        }
        for (name, src) in &self.sources {
            let transforms = matches!(src, SourceConfig::Transforms(_));
            let f = |key: &str| match transforms {
                true => format!("{TRANSFORMS_SOURCE}.{key}"),
                false => format!("sources.{name}.{key}"),
            };
            if name.contains('.') {
                err(
                    format!("sources.{name}"),
                    "source names may not contain `.`".into(),
                );
            }
            if crate::names::is_reserved(&crate::names::identifier(name, usize::MAX)) {
                err(
                    format!("sources.{name}"),
                    "source names may not start with `_sluice` (sluice's own warehouse schema)"
                        .into(),
                );
            }
            let shared = src.shared();
            if shared.scheduling.max_lag_secs == Some(0) {
                err(f("max_lag_secs"), "must be at least 1".into());
            }
            let cdc = src.mode() == Mode::Cdc;
            if let Err((key, message)) = shared.scheduling.resolve(cdc) {
                err(f(key), message);
            }
            if shared.scheduling.trigger.is_some() && !matches!(src, SourceConfig::Files(_)) {
                err(
                    f("trigger"),
                    "only files sources have arrivals to trigger on; use `schedule`".into(),
                );
            }
            if let Some(w) = shared.warehouse {
                if !self.warehouses.contains_key(w) {
                    err(
                        f("warehouse"),
                        format!(
                            "no warehouse named `{w}` (have: {})",
                            self.warehouse_names()
                        ),
                    );
                }
            } else if self.warehouses.len() > 1 && !transforms {
                err(
                    f("warehouse"),
                    format!(
                        "several warehouses are configured: name one ({})",
                        self.warehouse_names()
                    ),
                );
            }
            if !matches!(src, SourceConfig::Mysql(_)) {
                if let Some(Tables::Map(m)) = shared.tables {
                    for (t, _) in m.iter().filter(|(_, c)| c.query.is_some()) {
                        err(
                            f(&format!("tables.{t}.query")),
                            "query-defined tables are read from MySQL/MariaDB sources only".into(),
                        );
                    }
                }
            }
            let specs = self.source_tables(name, src);
            let kind_errors = match src {
                SourceConfig::Files(c) => c.validate(name),
                SourceConfig::Mongodb(c) => c.validate(),
                SourceConfig::Events(c) => c.validate(),
                SourceConfig::Transforms(c) => c.validate(),
                SourceConfig::Mysql(c) => c.validate(
                    &specs
                        .iter()
                        .map(|s| (s.table.clone(), s.cursor.clone()))
                        .collect::<Vec<_>>(),
                ),
                SourceConfig::Postgres(c) => c.validate(
                    &specs
                        .iter()
                        .map(|s| (s.table.clone(), s.cursor.clone()))
                        .collect::<Vec<_>>(),
                ),
            };
            for (key, message) in kind_errors {
                err(f(&key), message);
            }
            let declared = src.as_files().and_then(FilesConfig::declared);
            for spec in specs {
                let tf = |key: &str| match transforms {
                    true => format!("{TRANSFORMS_SOURCE}.{}.{key}", spec.table),
                    false => format!("sources.{name}.tables.{}.{key}", spec.table),
                };
                if transforms {
                    let named = src
                        .as_transforms()
                        .and_then(|t| t.transforms.get(&spec.table))
                        .and_then(|t| t.warehouse.as_ref());
                    match named {
                        Some(w) if !self.warehouses.contains_key(w) => err(
                            tf("warehouse"),
                            format!(
                                "no warehouse named `{w}` (have: {})",
                                self.warehouse_names()
                            ),
                        ),
                        None if self.warehouses.len() > 1 => err(
                            tf("warehouse"),
                            format!(
                                "several warehouses are configured: name one ({})",
                                self.warehouse_names()
                            ),
                        ),
                        _ => {}
                    }
                }
                if spec.loads.is_empty() {
                    err(f("load"), "lists no load mode".into());
                }
                let mut modes = spec.loads.clone();
                modes.sort();
                modes.dedup();
                if modes.len() != spec.loads.len() {
                    err(f("load"), "lists a mode twice".into());
                }
                // A layout per mode: only for a mode the table loads, and not nested again.
                for (mode, l) in spec.layout.overrides() {
                    let at = tf(&format!("layout.{}", mode.name()));
                    if !spec.loads.contains(&mode) {
                        err(
                            at.clone(),
                            format!("the table does not load in {} mode", mode.name()),
                        );
                    }
                    if let Some((inner, _)) = l.overrides().next() {
                        err(
                            format!("{at}.{}", inner.name()),
                            "a mode's layout takes no layouts of its own".into(),
                        );
                    }
                }
                let layouts = std::iter::once(("layout".to_string(), &spec.layout)).chain(
                    spec.layout
                        .overrides()
                        .map(|(m, l)| (format!("layout.{}", m.name()), l)),
                );
                for (at, l) in layouts {
                    if let Some(style) = &l.sortkey_style {
                        if !matches!(style.as_str(), "compound" | "interleaved") {
                            err(
                                tf(&format!("{at}.sortkey_style")),
                                format!("`{style}` is not one of compound, interleaved"),
                            );
                        }
                    }
                }
                let mut names = std::collections::BTreeSet::new();
                let checks = Self::table_overrides(src, &spec.table).checks;
                for (i, c) in checks.iter().enumerate() {
                    let at = |key: &str| tf(&format!("checks[{i}].{key}"));
                    match c.resolve() {
                        Err((key, message)) => err(at(key), message),
                        Ok(c) => {
                            if !names.insert(c.name.clone()) {
                                err(
                                    at("name"),
                                    format!("another check of this table is named `{}`", c.name),
                                );
                            }
                            if let Rule::Reference { source, .. } = &c.rule {
                                if !self.sources.contains_key(source) {
                                    err(at("to"), format!("no source named `{source}`"));
                                }
                            }
                        }
                    }
                }
                // Only files know their key before discovery; database tables are checked
                // when their key is known (loads refuse what needs one).
                if src.discovers_tables() {
                    continue;
                }
                for m in &spec.loads {
                    match m {
                        // Without a key, merge matches rows by their values (`_sluice_row_id`),
                        // but a soft delete flags the one row of a key.
                        LoadMode::Merge
                            if spec.primary_key.is_empty() && spec.deletes == Deletes::Soft =>
                        {
                            err(
                                tf("primary_key"),
                                "deletes = \"soft\" flags the row of a key: set primary_key = [\"col\", ...] or deletes = \"hard\"".into(),
                            )
                        }
                        LoadMode::History if spec.primary_key.is_empty() => err(
                            tf("primary_key"),
                            "load = \"history\" keeps versions per key: set primary_key = [\"col\", ...]".into(),
                        ),
                        _ => {}
                    }
                }
                if let Some(declared) = &declared {
                    for k in &spec.primary_key {
                        if !declared.contains(&k.as_str()) {
                            err(
                                tf("primary_key"),
                                format!("`{k}` is not one of the declared columns"),
                            );
                        }
                    }
                }
            }
        }
        errs
    }

    fn warehouse_names(&self) -> String {
        self.warehouses
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The tables a source feeds, with per-table overrides applied. A database source
    /// without a `tables` list feeds whatever discovery finds (see [`Config::table_spec`]).
    pub fn source_tables(&self, name: &str, src: &SourceConfig) -> Vec<TableSpec> {
        if let Some(files) = src.as_files() {
            let table = files.table_name(name);
            return vec![self.table_spec(name, src, &table, &[])];
        }
        if let Some(events) = src.as_events() {
            return events
                .table_names()
                .iter()
                .map(|t| self.table_spec(name, src, t, &events.key()))
                .collect();
        }
        let names: Vec<String> = match src.shared().tables {
            Some(Tables::List(l)) => l.clone(),
            Some(Tables::Map(m)) => m.keys().cloned().collect(),
            None => Vec::new(),
        };
        names
            .iter()
            .map(|t| self.table_spec(name, src, t, &[]))
            .collect()
    }

    /// The overrides configured for one table of a source.
    fn table_overrides(src: &SourceConfig, table: &str) -> TableConfig {
        match src.shared().tables {
            // A table's own section, else the first pattern naming it.
            Some(Tables::Map(m)) => m
                .get(table)
                .or_else(|| {
                    m.iter()
                        .find(|(p, _)| crate::pattern::matches(p, table))
                        .map(|(_, c)| c)
                })
                .cloned()
                .unwrap_or_default(),
            _ => TableConfig::default(),
        }
    }

    /// One table's spec: configured overrides first, then the source's settings; the key is
    /// the configured `primary_key`, else `source_key` (what the database declares).
    pub fn table_spec(
        &self,
        name: &str,
        src: &SourceConfig,
        table: &str,
        source_key: &[String],
    ) -> TableSpec {
        let overrides = Self::table_overrides(src, table);
        let primary_key = overrides
            .primary_key
            .clone()
            .unwrap_or_else(|| source_key.to_vec());
        let shared = src.shared();
        let loads = overrides
            .load
            .as_ref()
            .or(shared.load)
            .map(LoadSpec::modes)
            .unwrap_or_else(|| {
                vec![if primary_key.is_empty() {
                    LoadMode::Append
                } else {
                    LoadMode::Merge
                }]
            });
        let warehouse = overrides
            .warehouse
            .clone()
            .or_else(|| shared.warehouse.cloned())
            .or_else(|| self.warehouses.keys().next().cloned())
            .unwrap_or_else(|| DEFAULT_WAREHOUSE_NAME.into());
        TableSpec {
            source: name.to_string(),
            table: table.to_string(),
            primary_key,
            loads,
            deletes: overrides.deletes.or(shared.deletes).unwrap_or_default(),
            schema_changes: SchemaPolicies::default()
                .with(shared.schema_changes)
                .with(overrides.schema_changes.as_ref()),
            warehouse,
            cursor: overrides.cursor.clone().or_else(|| shared.cursor.cloned()),
            layout: overrides.layout.clone().unwrap_or_default(),
            // Validated with the config: a check that does not resolve was refused there.
            checks: overrides
                .checks
                .iter()
                .filter_map(|c| c.resolve().ok())
                .collect(),
        }
    }

    /// Every table of every source, in config order.
    pub fn all_tables(&self) -> Vec<TableSpec> {
        self.sources
            .iter()
            .flat_map(|(n, s)| self.source_tables(n, s))
            .collect()
    }

    /// Every secret the config names, with the field naming it (`warehouses.wh.password`).
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        let mut out = Vec::new();
        for (name, source) in &self.sources {
            let (field, secret) = match source {
                SourceConfig::Mysql(m) => ("password", &m.password),
                SourceConfig::Mongodb(m) => ("password", &m.password),
                SourceConfig::Postgres(p) => ("password", &p.password),
                SourceConfig::Events(e) => ("token", &e.token),
                _ => continue,
            };
            if let Some(s) = secret {
                out.push((format!("sources.{name}.{field}"), s));
            }
        }
        for (name, wh) in &self.warehouses {
            if let WarehouseConfig::Postgres {
                password: Some(s), ..
            }
            | WarehouseConfig::Redshift {
                password: Some(s), ..
            } = wh
            {
                out.push((format!("warehouses.{name}.password"), s));
            }
        }
        if let Some(s) = self.serve.as_ref().and_then(|s| s.token.as_ref()) {
            out.push(("serve.token".into(), s));
        }
        if let Some(s) = self.state.as_ref().and_then(|s| s.password.as_ref()) {
            out.push(("state.password".into(), s));
        }
        out
    }

    /// Resolves a path from the config against the config's directory (URLs pass through).
    pub fn resolve_path(&self, p: &str) -> String {
        if p.contains("://") || Path::new(p).is_absolute() {
            p.to_string()
        } else {
            self.base_dir.join(p).to_string_lossy().into_owned()
        }
    }
}

/// A one-character option as its byte (`"\t"` and `"|"` alike).
pub fn single_byte(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    (b.len() == 1 && b[0].is_ascii()).then(|| b[0])
}

/// Splits a declared column `"name type"` and checks the type.
pub fn split_column(decl: &str) -> Result<(&str, arrow::datatypes::DataType), String> {
    let decl = decl.trim();
    let (name, ty) = decl.split_once(char::is_whitespace).ok_or_else(|| {
        format!("`{decl}` should be \"name type\", e.g. \"s_acctbal decimal(15,2)\"")
    })?;
    let t = parse_type(ty)?;
    Ok((name, t))
}

/// The value or key a parse error names (`unknown variant `stop``, `unknown field `x``).
/// The first secret key (`password`, `token`) whose value is not written `{ env = … }` or
/// `{ file = … }`, with its line.
fn secret_in_place(text: &str) -> Option<(String, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        let secret = key == "password" || key == "token";
        (secret && !value.trim_start().starts_with('{')).then(|| (key.to_string(), i + 1))
    })
}

fn named_token(message: &str) -> Option<String> {
    ["unknown variant `", "unknown field `"]
        .iter()
        .find_map(|p| message.split(p).nth(1))
        .and_then(|rest| rest.split('`').next())
        .map(String::from)
}

/// The first line below a `[sources` header where `token` stands as a key or a quoted value.
fn find_token(text: &str, token: &str) -> Option<usize> {
    let mut in_sources = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_sources = t.starts_with("[sources");
            continue;
        }
        // A key (`token =`, in an inline table too) or a quoted value.
        let as_key = t.match_indices(token).any(|(at, _)| {
            let before = t[..at].chars().last();
            let after = t[at + token.len()..].trim_start();
            before.is_none_or(|c| !c.is_alphanumeric() && c != '_') && after.starts_with('=')
        });
        if in_sources && (as_key || t.contains(&format!("\"{token}\""))) {
            return Some(i + 1);
        }
    }
    None
}

/// Finds the line of a dotted field (`sources.x.delimiter`) in the TOML text: the line of its key
/// under the section header, or the header itself.
fn locate(text: &str, field: &str) -> Option<usize> {
    let field = field.split('[').next().unwrap_or(field);
    let parts: Vec<&str> = field.split('.').collect();
    for split in (1..=parts.len()).rev() {
        let section = parts[..split].join(".");
        let key = parts.get(split);
        let header = format!("[{section}]");
        let mut in_section = false;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                if in_section && key.is_some() {
                    break;
                }
                in_section = t == header;
                if in_section && key.is_none() {
                    return Some(i + 1);
                }
            } else if in_section {
                if let Some(k) = key {
                    if t.split('=').next().map(str::trim) == Some(*k) {
                        return Some(i + 1);
                    }
                }
            }
        }
    }
    None
}

/// `field: message` of each error `text` parses into (none: it parsed), for tests.
#[cfg(test)]
pub(crate) fn error_lines(text: &str) -> Vec<String> {
    Config::parse(text, std::path::Path::new("/p"))
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[lake]
url = "lake"

[sources.suppliers]
kind = "files"
url = "drops/supplier/{date}/"
format = "csv"
delimiter = "|"
header = false
columns = ["s_suppkey bigint", "s_name text", "s_acctbal decimal(15,2)"]
table = "supplier"
load = ["merge", "append"]

[sources.suppliers.tables.supplier]
primary_key = ["s_suppkey"]
"#;

    #[test]
    fn parses_the_contract_example() {
        let c = Config::parse(GOOD, Path::new("/p")).unwrap();
        let t = &c.all_tables()[0];
        assert_eq!(t.table, "supplier");
        assert_eq!(t.primary_key, vec!["s_suppkey"]);
        assert_eq!(
            t.targets(),
            vec![
                (LoadMode::Merge, "supplier".into()),
                (LoadMode::Append, "supplier_append".into())
            ]
        );
        assert_eq!(t.warehouse, "local");
        assert_eq!(c.resolve_path("lake"), "/p/lake");
    }

    #[test]
    fn mongodb_sources_are_checked_key_by_key() {
        let base = "[sources.m]\nkind = \"mongodb\"\nurl = \"mongodb://app@db:27017/shop\"\n";
        let ok = format!("{base}mode = \"cdc\"\nnested = \"flatten\"\nmax_depth = 2\nread_preference = \"secondary\"\n");
        let c = Config::parse(&ok, Path::new(".")).expect("a good mongodb source");
        assert_eq!(c.sources["m"].mode(), Mode::Cdc);
        // Collections by pattern; a pattern's section configures the tables it matches.
        let patterned = format!(
            "{base}[sources.m.tables.\"orders_*\"]\nprimary_key = [\"_id\"]\nload = \"append\"\n"
        );
        let c = Config::parse(&patterned, Path::new(".")).expect("collections by pattern");
        let spec = c.table_spec("m", &c.sources["m"], "orders_2024", &[]);
        assert_eq!(spec.loads, vec![LoadMode::Append]);
        let mysql = "[sources.s]\nkind = \"mysql\"\nurl = \"mysql://app@db:3306/shop\"\ntables = [\"orders_*\"]\n";
        let errs = Config::parse(mysql, Path::new(".")).unwrap_err();
        assert_eq!(errs[0].field, "sources.s.tables", "{errs:?}");
        for (extra, field) in [
            ("mode = \"incremental\"", "sources.m.mode"),
            ("read_preference = \"fastest\"", "sources.m.read_preference"),
            ("max_depth = 2", "sources.m.max_depth"),
            ("sample_docs = 0", "sources.m.sample_docs"),
            ("cursor = \"updated_at\"", "sources.m.cursor"),
        ] {
            let errs = Config::parse(&format!("{base}{extra}\n"), Path::new(".")).unwrap_err();
            let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, vec![field], "{extra}: {errs:?}");
        }
        for url in [
            "mongodb://app:secret@db/shop",
            "mongodb://db:27017",
            "mysql://db/shop",
        ] {
            let text = base.replace("mongodb://app@db:27017/shop", url);
            let errs = Config::parse(&text, Path::new(".")).unwrap_err();
            assert_eq!(errs[0].field, "sources.m.url", "{url}: {errs:?}");
        }
    }

    #[test]
    fn events_sources_are_checked_key_by_key() {
        let base = "[sources.e]\nkind = \"events\"\n";
        let c = Config::parse(base, Path::new(".")).expect("a bare events source");
        let specs = c.source_tables("e", &c.sources["e"]);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].table, DEFAULT_EVENTS_TABLE);
        assert_eq!(specs[0].loads, vec![LoadMode::Append]);
        assert_eq!(c.sources["e"].mode(), Mode::Cdc);
        let keyed = format!("{base}tables = [\"a\", \"b\"]\nid_field = \"id\"\n");
        let c = Config::parse(&keyed, Path::new(".")).expect("tables with an id");
        let specs = c.source_tables("e", &c.sources["e"]);
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].primary_key, vec!["id".to_string()]);
        assert_eq!(specs[1].loads, vec![LoadMode::Merge]);
        for (extra, field) in [
            ("tables = [\"a_*\"]", "sources.e.tables"),
            ("schedule = \"hourly\"", "sources.e.schedule"),
            ("max_depth = 2", "sources.e.max_depth"),
            ("buffer_mb = 0", "sources.e.buffer_mb"),
            (
                "buffer_mb = 1\nmax_body_bytes = 2000000",
                "sources.e.max_body_bytes",
            ),
            // The default body (8 MiB) would never fit a 4 MiB buffer.
            ("buffer_mb = 4", "sources.e.max_body_bytes"),
            ("load = \"replace\"", "sources.e.load"),
            ("url = \"http://x\"", "sources.e.url"),
            // A parse error: named by its key and line, never repeating the value.
            ("token = \"hunter2\"", "token"),
            (
                "[serve]\nlisten = \"0.0.0.0:8080\"\ntoken = { env = \"T\" }",
                "sources.e.token",
            ),
        ] {
            let errs = Config::parse(&format!("{base}{extra}\n"), Path::new(".")).unwrap_err();
            let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, vec![field], "{extra}: {errs:?}");
            assert!(!format!("{errs:?}").contains("hunter2"));
        }
    }

    #[test]
    fn schedules_and_triggers_are_checked_and_defaulted() {
        let with = |keys: &str| {
            let text = GOOD.replace(
                "table = \"supplier\"",
                &format!("table = \"supplier\"\n{keys}"),
            );
            Config::parse(&text, Path::new("."))
        };
        let schedule = |c: &Config| {
            c.sources["suppliers"]
                .shared()
                .scheduling
                .resolve(false)
                .unwrap()
                .describe()
        };
        assert_eq!(schedule(&with("").unwrap()), "hourly");
        assert_eq!(schedule(&with("schedule = \"daily\"").unwrap()), "daily");
        assert_eq!(
            schedule(&with("trigger = \"arrival\"\npoll_interval_secs = 5").unwrap()),
            "on arrival (every 5 s)"
        );
        for (keys, field, says) in [
            (
                "schedule = \"weekly\"",
                "sources.suppliers.schedule",
                "neither",
            ),
            (
                "trigger = \"cron\"",
                "sources.suppliers.trigger",
                "not a trigger",
            ),
            (
                "trigger = \"arrival\"\nschedule = \"hourly\"",
                "sources.suppliers.trigger",
                "not both",
            ),
            (
                "poll_interval_secs = 5",
                "sources.suppliers.poll_interval_secs",
                "only with",
            ),
            (
                "trigger = \"arrival\"\npoll_interval_secs = 0",
                "sources.suppliers.poll_interval_secs",
                "at least 1",
            ),
        ] {
            let errs = with(keys).unwrap_err();
            assert_eq!(errs.len(), 1, "{keys}: {errs:?}");
            assert_eq!(errs[0].field, field, "{keys}");
            assert!(errs[0].message.contains(says), "{keys}: {errs:?}");
        }
    }

    #[test]
    fn serve_keys_are_checked_by_name() {
        let ok = format!(
            "{GOOD}\n[serve]\nlisten = \"127.0.0.1:8080\"\n[state]\nurl = \"s.db\"\nlease_secs = 5\n[[alerts]]\nwebhook = \"https://x\"\nformat = \"slack\"\n"
        )
        .replace(
            "table = \"supplier\"",
            "table = \"supplier\"\nschedule = \"hourly\"\nmax_lag_secs = 300",
        );
        let config = Config::parse(&ok, Path::new(".")).expect("serve keys accepted");
        assert_eq!(config.state.as_ref().and_then(|s| s.lease_secs), Some(5));
        for (from, to, field) in [
            (
                "listen = \"127.0.0.1:8080\"",
                "listen = \"0.0.0.0:8080\"",
                "serve.token",
            ),
            (
                "listen = \"127.0.0.1:8080\"",
                "listen = \"nowhere\"",
                "serve.listen",
            ),
            ("format = \"slack\"", "format = \"xml\"", "alerts[0].format"),
            (
                "webhook = \"https://x\"",
                "webhook = \"x\"",
                "alerts[0].webhook",
            ),
            (
                "max_lag_secs = 300",
                "max_lag_secs = 0",
                "sources.suppliers.max_lag_secs",
            ),
        ] {
            let errs = Config::parse(&ok.replace(from, to), Path::new(".")).unwrap_err();
            let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, vec![field], "{to}: {errs:?}");
        }
        // Off loopback with a token is fine.
        let open = ok.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"0.0.0.0:8080\"\ntoken = { env = \"T\" }",
        );
        assert!(Config::parse(&open, Path::new(".")).is_ok());
        assert!(
            is_loopback("[::1]:80") && is_loopback("localhost:1") && !is_loopback("10.0.0.1:80")
        );
    }

    #[test]
    fn reserved_source_names_are_refused() {
        let reserved = Config::parse(
            "[sources._sluice_x]\nkind = \"files\"\nurl = \"x\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(reserved[0].message.contains("_sluice"), "{reserved:?}");
    }

    #[test]
    fn replace_is_refused_where_no_complete_image_comes() {
        for (mode, ok) in [("snapshot", true), ("cdc", false), ("incremental", false)] {
            let text = format!(
                "[sources.db]\nkind = \"mysql\"\nurl = \"mysql://u@h/d\"\nmode = \"{mode}\"\ncursor = \"t\"\nload = [\"merge\", \"replace\"]\n"
            )
            .replace("cursor = \"t\"\n", if mode == "incremental" { "cursor = \"t\"\n" } else { "" });
            let r = Config::parse(&text, Path::new("."));
            match ok {
                true => assert!(r.is_ok(), "{mode}: {r:?}"),
                false => {
                    let errs = r.unwrap_err();
                    assert!(
                        errs.iter()
                            .any(|e| e.field == "sources.db.load" && e.message.contains("replace")),
                        "{mode}: {errs:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn checks_are_resolved_into_the_spec_and_their_mistakes_named() {
        let base = "[sources.shop]\nkind = \"files\"\nurl = \"x\"\ntable = \"orders\"\n";
        let ok = format!("{base}[[sources.shop.tables.orders.checks]]\nkind = \"not_null\"\ncolumn = \"id\"\naction = \"halt\"\n");
        let config = Config::parse(&ok, Path::new(".")).unwrap();
        let spec = &config.all_tables()[0];
        assert_eq!(spec.checks.len(), 1);
        assert_eq!(spec.checks[0].name, "not_null_id");
        assert_eq!(spec.checks[0].action, CheckAction::Halt);
        let two = format!(
            "{ok}[[sources.shop.tables.orders.checks]]\nkind = \"not_null\"\ncolumn = \"id\"\n"
        );
        let errs = Config::parse(&two, Path::new(".")).unwrap_err();
        assert_eq!(
            errs[0].field, "sources.shop.tables.orders.checks[1].name",
            "{errs:?}"
        );
        // Inside a table's section, an unknown key or kind is named, not "no variant matched".
        for (typo, word) in [("kind = \"not_nul\"", "not_nul"), ("on = \"x\"", "`on`")] {
            let text =
                format!("{base}[[sources.shop.tables.orders.checks]]\n{typo}\ncolumn = \"id\"\n");
            let errs = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(errs[0].message.contains(word), "{typo}: {errs:?}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = GOOD.replace("header = false", "header = false\ndelimter = \",\"");
        let errs = Config::parse(&text, Path::new(".")).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("delimter"), "{:?}", errs[0]);
        assert_eq!(errs[0].line, Some(11));
    }

    #[test]
    fn reports_every_semantic_error_naming_the_field() {
        let text = GOOD
            .replace("delimiter = \"|\"", "delimiter = \"||\"")
            .replace("\"s_name text\"", "\"s_name money\"")
            .replace("primary_key = [\"s_suppkey\"]", "primary_key = [\"nope\"]");
        let errs = Config::parse(&text, Path::new(".")).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"sources.suppliers.delimiter"), "{errs:?}");
        assert!(fields.contains(&"sources.suppliers.columns[1]"), "{errs:?}");
        assert!(
            fields.contains(&"sources.suppliers.tables.supplier.primary_key"),
            "{errs:?}"
        );
        let delim = errs
            .iter()
            .find(|e| e.field == "sources.suppliers.delimiter")
            .unwrap();
        assert_eq!(delim.line, Some(9));
    }

    #[test]
    fn keyless_merge_matches_rows_and_default_is_append() {
        let text = "[sources.a]\nkind = \"files\"\nurl = \"x\"\nload = \"merge\"\n";
        assert!(Config::parse(text, Path::new(".")).is_ok());
        for refused in ["load = \"history\"", "load = \"merge\"\ndeletes = \"soft\""] {
            let text = format!("[sources.a]\nkind = \"files\"\nurl = \"x\"\n{refused}\n");
            let errs = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                errs[0].message.contains("primary_key"),
                "{refused}: {errs:?}"
            );
        }
        let ok = Config::parse(
            "[sources.a]\nkind = \"files\"\nurl = \"x\"\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(ok.all_tables()[0].loads, vec![LoadMode::Append]);
    }

    #[test]
    fn secrets_only_by_reference_and_never_printed() {
        let text = "[warehouses.pg]\nkind = \"duckdb\"\n[sources.a]\nkind = \"files\"\nurl = \"x\"\npassword = \"hunter2\"\n";
        assert!(Config::parse(text, Path::new(".")).is_err());
        let s = Secret::Env("PG_PW".into());
        assert_eq!(format!("{s:?}"), "Secret(env PG_PW)");
    }

    #[test]
    fn mysql_sources_are_checked_field_by_field() {
        let ok = "[sources.shop]\nkind = \"mysql\"\nurl = \"mysql://u@h:3306/shop\"\nmode = \"incremental\"\ncursor = \"updated_at\"\ntables = [\"a\", \"b\"]\n";
        let c = Config::parse(ok, Path::new(".")).unwrap();
        let specs = c.all_tables();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].cursor.as_deref(), Some("updated_at"));
        // Discovered keys decide the default load.
        let src = &c.sources["shop"];
        assert_eq!(
            c.table_spec("shop", src, "a", &["id".into()]).loads,
            vec![LoadMode::Merge]
        );
        assert_eq!(
            c.table_spec("shop", src, "a", &[]).loads,
            vec![LoadMode::Append]
        );

        let bad = "[sources.shop]\nkind = \"mysql\"\nurl = \"mysql://u:secret@h:3306/\"\nmode = \"incremental\"\nssl_mode = \"verify_ca\"\ndelimiter = \",\"\n";
        let errs = Config::parse(bad, Path::new(".")).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has = |field: &str, words: &str| {
            text.iter()
                .any(|t| t.contains(&format!("sources.shop.{field}")) && t.contains(words))
        };
        assert!(has("url", "holds a password"), "{text:?}");
        assert!(has("url", "names no database"), "{text:?}");
        assert!(has("ssl_ca", "verify_ca"), "{text:?}");
        assert!(has("delimiter", "files source option"), "{text:?}");
        assert!(
            !text.iter().any(|t| t.contains("secret")),
            "the password is never echoed: {text:?}"
        );
    }

    #[test]
    fn query_tables_are_mysql_snapshot_or_incremental_only() {
        let base = "[sources.shop]\nkind = \"mysql\"\nurl = \"mysql://u@h:3306/shop\"\n";
        let ok = format!("{base}[sources.shop.tables.orders]\n[sources.shop.tables.big_orders]\nquery = \"  SELECT id, total FROM orders WHERE total > 100 ;\"\nprimary_key = [\"id\"]\n");
        let c = Config::parse(&ok, Path::new(".")).unwrap();
        let SourceConfig::Mysql(m) = &c.sources["shop"] else {
            panic!("a mysql source")
        };
        let queries = m.queries();
        assert_eq!(queries.len(), 1, "{queries:?}");
        assert_eq!(
            queries["big_orders"],
            "SELECT id, total FROM orders WHERE total > 100"
        );
        assert_eq!(c.all_tables().len(), 2);

        let cdc = ok.replace(
            "[sources.shop.tables.orders]",
            "mode = \"cdc\"\n[sources.shop.tables.orders]",
        );
        let errs = error_lines(&cdc);
        assert!(
            errs.iter()
                .any(|e| e.contains("sources.shop.tables.big_orders.query")
                    && e.contains("no binlog")),
            "{errs:?}"
        );
        let empty = format!("{base}[sources.shop.tables.t]\nquery = \" ; \"\n");
        let errs = error_lines(&empty);
        assert!(
            errs.iter()
                .any(|e| e.contains("sources.shop.tables.t.query") && e.contains("empty")),
            "{errs:?}"
        );
        let files = "[sources.drop]\nkind = \"files\"\nurl = \"x\"\n[sources.drop.tables.drop]\nquery = \"SELECT 1\"\n";
        let errs = error_lines(files);
        assert!(
            errs.iter()
                .any(|e| e.contains("sources.drop.tables.drop.query")
                    && e.contains("MySQL/MariaDB sources only")),
            "{errs:?}"
        );
    }

    #[test]
    fn postgres_warehouses_and_history_are_checked() {
        let src = "[sources.a]\nkind = \"files\"\nurl = \"x\"\nload = \"history\"\n";
        let ok = format!("[warehouses.pg]\nkind = \"postgres\"\nurl = \"postgres://loader@db:5432/wh\"\nssl_mode = \"verify-full\"\nssl_ca = \"ca.pem\"\nmax_changes_per_transaction = 10\n{src}[sources.a.tables.a]\nprimary_key = [\"id\"]\n");
        let c = Config::parse(&ok, Path::new(".")).unwrap();
        assert_eq!(c.warehouses["pg"].changes_per_transaction(), 10);
        assert_eq!(c.all_tables()[0].loads, vec![LoadMode::History]);

        let bad = format!("[warehouses.pg]\nkind = \"postgres\"\nurl = \"postgres://u:secret@db/\"\nssl_mode = \"verify-full\"\n{src}");
        let errs = Config::parse(&bad, Path::new(".")).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has =
            |field: &str, words: &str| text.iter().any(|t| t.contains(field) && t.contains(words));
        assert!(has("warehouses.pg.url", "holds a password"), "{text:?}");
        assert!(has("warehouses.pg.url", "names no database"), "{text:?}");
        assert!(has("warehouses.pg.ssl_ca", "verify-full"), "{text:?}");
        assert!(has("primary_key", "history"), "{text:?}");
        assert!(!text.iter().any(|t| t.contains("secret")), "{text:?}");
    }

    #[test]
    fn redshift_warehouses_and_layouts_are_checked() {
        let src = "[sources.a]\nkind = \"files\"\nurl = \"x\"\n[sources.a.tables.a]\nprimary_key = [\"id\"]\n[sources.a.tables.a.layout]\ndistkey = \"id\"\nsortkey = [\"day\", \"id\"]\nencode = { note = \"zstd\" }\n";
        let ok = format!("[lake]\nurl = \"s3://lake/prefix\"\n[warehouses.rs]\nkind = \"redshift\"\nurl = \"redshift://loader@c.abc.us-east-1.redshift.amazonaws.com:5439/dev\"\niam_role = \"arn:aws:iam::123456789012:role/sluice\"\n{src}");
        let c = Config::parse(&ok, Path::new(".")).unwrap();
        let spec = &c.all_tables()[0];
        assert_eq!(spec.layout.distkey.as_deref(), Some("id"));
        assert_eq!(spec.layout.sortkey, vec!["day", "id"]);
        assert_eq!(spec.layout.encode["note"], "zstd");

        // A layout per mode replaces the distribution and sort key it sets, adds encodings.
        let src = "[sources.a]\nkind = \"files\"\nurl = \"x\"\nload = [\"merge\", \"history\"]\n[sources.a.tables.a]\nprimary_key = [\"id\"]\n[sources.a.tables.a.layout]\ndistkey = \"id\"\nsortkey = [\"id\"]\nencode = { note = \"zstd\" }\n[sources.a.tables.a.layout.history]\nsortkey = [\"_sluice_valid_from\", \"id\"]\nsortkey_style = \"interleaved\"\nencode = { id = \"az64\" }\n";
        let c = Config::parse(src, Path::new(".")).unwrap();
        let spec = &c.all_tables()[0];
        let merge = spec.layout.for_mode(LoadMode::Merge);
        assert_eq!(
            (merge.distkey.as_deref(), &merge.sortkey[..]),
            (Some("id"), &["id".to_string()][..])
        );
        let history = spec.layout.for_mode(LoadMode::History);
        assert_eq!(history.distkey.as_deref(), Some("id"));
        assert_eq!(history.sortkey, vec!["_sluice_valid_from", "id"]);
        assert_eq!(history.sortkey_style.as_deref(), Some("interleaved"));
        assert_eq!(history.encode.len(), 2);
        assert!(history.history.is_none());
        let bad = src.replace("load = [\"merge\", \"history\"]", "load = [\"merge\"]");
        let errors = |bad: &str| -> String {
            let errs = Config::parse(bad, Path::new(".")).unwrap_err();
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let e = errors(&bad);
        assert!(
            e.contains("layout.history") && e.contains("does not load in history mode"),
            "{e}"
        );
        let bad = src.replace("\"interleaved\"", "\"sideways\"").replace(
            "[sources.a.tables.a.layout.history]",
            "sortkey_style = \"sideways\"\n[sources.a.tables.a.layout.history]",
        );
        let e = errors(&bad);
        assert!(
            e.contains("layout.sortkey_style") && e.contains("layout.history.sortkey_style"),
            "{e}"
        );

        let upkeep = |extra: &str| {
            let cfg = format!("[lake]\nurl = \"s3://lake/prefix\"\n[warehouses.rs]\nkind = \"redshift\"\nurl = \"redshift://loader@c:5439/dev\"\niam_role = \"arn:aws:iam::1:role/s\"\n{extra}\n{src}");
            match Config::parse(&cfg, Path::new(".")) {
                Ok(_) => String::new(),
                Err(errs) => errs
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        };
        assert_eq!(
            upkeep(
                "analyze_after_changes = 100000\nvacuum = \"delete only\"\nvacuum_every_hours = 6"
            ),
            ""
        );
        assert!(upkeep("vacuum = \"sometimes\"").contains("warehouses.rs.vacuum"));
        assert!(upkeep("vacuum_every_hours = 6").contains("warehouses.rs.vacuum_every_hours"));
        assert!(upkeep("analyze_after_changes = 0").contains("warehouses.rs.analyze_after_changes"));

        let bad = format!("[warehouses.rs]\nkind = \"redshift\"\nurl = \"redshift://u:secret@c:5439/dev\"\niam_role = \"sluice\"\n{src}");
        let errs = Config::parse(&bad, Path::new(".")).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has =
            |field: &str, words: &str| text.iter().any(|t| t.contains(field) && t.contains(words));
        assert!(has("warehouses.rs.url", "holds a password"), "{text:?}");
        assert!(
            has("warehouses.rs.iam_role", "not an IAM role ARN"),
            "{text:?}"
        );
        assert!(
            has("warehouses.rs.kind", "put the lake on s3://"),
            "{text:?}"
        );
        assert!(!text.iter().any(|t| t.contains("secret")), "{text:?}");
    }

    /// Every secret the config names is listed with its field, so that those kept in AWS
    /// are all fetched when sluice starts.
    #[test]
    fn every_secret_is_listed_with_its_field() {
        let cfg = "[sources.db]\nkind = \"mysql\"\nurl = \"mysql://u@h:3306/shop\"\npassword = { ssm = \"/db/pw\" }\n[sources.e]\nkind = \"events\"\ntoken = { aws_secret = \"ev\", key = \"token\" }\n[warehouses.pg]\nkind = \"postgres\"\nurl = \"postgres://u@h:5432/d\"\npassword = { env = \"PG_PW\" }\n[serve]\ntoken = { file = \"/run/token\" }\n[state]\nurl = \"postgres://u@h:5432/state\"\npassword = { aws_secret = \"state\" }\n";
        let c = Config::parse(cfg, Path::new(".")).unwrap();
        let listed: Vec<String> = c
            .secrets()
            .iter()
            .map(|(field, s)| format!("{field} {s:?}"))
            .collect();
        assert_eq!(
            listed,
            [
                "sources.db.password Secret(ssm /db/pw)",
                "sources.e.token Secret(aws_secret ev key token)",
                "warehouses.pg.password Secret(env PG_PW)",
                "serve.token Secret(file /run/token)",
                "state.password Secret(aws_secret state)",
            ]
        );
    }

    /// IAM sign-in: a provisioned endpoint or a Serverless one names whose credentials to
    /// ask for; anything else needs `cluster_id` or `workgroup`; IAM keys without
    /// `iam_auth`, a password beside it, and provisioned-only keys on a workgroup are named.
    #[test]
    fn redshift_iam_sign_in_is_checked() {
        let check = |url: &str, extra: &str| -> Vec<String> {
            let cfg = format!("[lake]\nurl = \"s3://lake/p\"\n[warehouses.rs]\nkind = \"redshift\"\nurl = \"{url}\"\niam_role = \"arn:aws:iam::1:role/s\"\n{extra}\n[sources.a]\nkind = \"files\"\nurl = \"x\"\ntable = \"t\"\nwarehouse = \"rs\"\n");
            match Config::parse(&cfg, Path::new(".")) {
                Ok(_) => Vec::new(),
                Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
            }
        };
        let provisioned = "redshift://loader@prod.abc123.eu-west-1.redshift.amazonaws.com:5439/dev";
        let serverless =
            "redshift://x@wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com:5439/dev";
        assert!(check(
            provisioned,
            "iam_auth = true\ndb_groups = [\"loaders\"]\nauto_create_user = true"
        )
        .is_empty());
        assert!(check(serverless, "iam_auth = true").is_empty());
        assert!(check(
            "redshift://loader@127.0.0.1:5439/dev",
            "iam_auth = true\ncluster_id = \"standin\"\nregion = \"us-east-1\""
        )
        .is_empty());
        let has = |errs: &[String], field: &str, words: &str| {
            assert!(
                errs.iter().any(|e| e.contains(field) && e.contains(words)),
                "{field} / {words}: {errs:?}"
            )
        };
        has(
            &check("redshift://loader@127.0.0.1:5439/dev", "iam_auth = true"),
            "warehouses.rs.iam_auth",
            "set `cluster_id`",
        );
        has(
            &check(provisioned, "cluster_id = \"prod\""),
            "warehouses.rs.cluster_id",
            "only applies with `iam_auth = true`",
        );
        has(
            &check(provisioned, "iam_auth = true\npassword = { env = \"PW\" }"),
            "warehouses.rs.password",
            "not used with `iam_auth",
        );
        has(
            &check(
                provisioned,
                "iam_auth = true\ncluster_id = \"a\"\nworkgroup = \"b\"",
            ),
            "warehouses.rs.workgroup",
            "keep one",
        );
        has(
            &check(serverless, "iam_auth = true\ndb_groups = [\"g\"]"),
            "warehouses.rs.db_groups",
            "provisioned clusters only",
        );
    }

    #[test]
    fn schema_changes_take_a_word_or_policies_by_kind() {
        use crate::schema::ChangeKind;
        let cfg = "[sources.a]\nkind = \"files\"\nurl = \"x\"\ntable = \"t\"\nschema_changes = \"freeze\"\n[sources.a.tables.t]\nschema_changes = { new_column = \"evolve\", new_table = \"halt\" }\n[sources.u]\nkind = \"files\"\nurl = \"y\"\nschema_changes = \"freeze\"\n";
        let c = Config::parse(cfg, Path::new(".")).unwrap();
        let tables = c.all_tables();
        let t = &tables
            .iter()
            .find(|s| s.table == "t")
            .unwrap()
            .schema_changes;
        let u = &tables
            .iter()
            .find(|s| s.table == "u")
            .unwrap()
            .schema_changes;
        // The word sets every change to columns; the table overrides two kinds.
        assert_eq!(t.of(ChangeKind::NewColumn), SchemaPolicy::Evolve);
        assert_eq!(t.of(ChangeKind::NewTable), SchemaPolicy::Halt);
        assert_eq!(t.of(ChangeKind::IncompatibleType), SchemaPolicy::Freeze);
        assert_eq!(u.of(ChangeKind::DroppedColumn), SchemaPolicy::Freeze);
        // new_table only changes when named.
        assert_eq!(u.of(ChangeKind::NewTable), SchemaPolicy::Evolve);

        for (bad, words) in [
            ("\"stop\"", "stop"),
            ("{ new_col = \"halt\" }", "new_col"),
            ("{ new_column = \"maybe\" }", "maybe"),
        ] {
            let text =
                format!("[sources.a]\nkind = \"files\"\nurl = \"x\"\nschema_changes = {bad}\n");
            let errs = Config::parse(&text, Path::new(".")).unwrap_err();
            let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(
                all.iter()
                    .any(|e| e.contains(words) && e.contains("line 4")),
                "{all:?}"
            );
        }
    }
}
