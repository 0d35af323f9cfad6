//! A loaded config with its lake: what every command starts from.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sluice_core::config::{Config, SourceConfig, TableSpec, WarehouseConfig};
use sluice_core::names::{disambiguated, identifier, is_reserved};
use sluice_core::secret::Secret;
use sluice_core::store::StoreOptions;
use sluice_lake::{FileOptions, Lake};
use sluice_sources::events::intake::Collectors;
use sluice_warehouses::duckdb::DuckDb;
use sluice_warehouses::postgres::{PgOptions, Postgres};
use sluice_warehouses::redshift::{Redshift, Staging};
use sluice_warehouses::{LedgerRow, Target, Warehouse};

use crate::EngineError;

/// A source and the tables named of it (None: all).
pub type Selected = (String, Option<Vec<String>>);

pub struct Project {
    pub config: Config,
    pub lake: Lake,
    /// One load at a time per warehouse in this process: sources captured side by side load
    /// as they commit, and an embedded DuckDB file takes one writer.
    warehouses_in_use: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Events sources' intakes: the HTTP handler posts where the source's stream takes.
    pub collectors: Collectors,
}

impl Project {
    /// Reads and validates the config and fetches the secrets it keeps in AWS (no other I/O
    /// beyond reading it and creating a local lake folder).
    pub fn open(config_path: &Path) -> Result<Project, EngineError> {
        let config = Config::load(config_path)?;
        sluice_aws::secrets::fetch_all(&config.secrets()).map_err(EngineError::Usage)?;
        let lake_url = config.resolve_path(&config.lake.url);
        let files = FileOptions::new(config.lake.compression.as_deref(), config.lake.file_mb);
        let lake = Lake::new(&lake_url, Self::store_options_of(&config))?.with_files(files);
        Ok(Project {
            config,
            lake,
            warehouses_in_use: Default::default(),
            collectors: Collectors::default(),
        })
    }

    pub fn store_options_of(config: &Config) -> StoreOptions {
        StoreOptions {
            endpoint: config.lake.endpoint.clone(),
            region: config.lake.region.clone(),
            sse: config.lake.sse.clone(),
            sse_kms_key_id: config.lake.sse_kms_key_id.clone(),
        }
    }

    /// Waits until no other load of this process uses warehouse `name`; it is this caller's
    /// until the guard drops.
    pub async fn warehouse_in_use(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .warehouses_in_use
            .lock()
            .expect("warehouse locks")
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    pub fn store_options(&self) -> StoreOptions {
        Self::store_options_of(&self.config)
    }

    pub fn source(&self, name: &str) -> Result<&SourceConfig, EngineError> {
        self.config
            .sources
            .get(name)
            .ok_or_else(|| EngineError::Usage(format!("no source named `{name}`")))
    }

    /// The sources `SOURCE` / `SOURCE.TABLE` arguments name, in config order, each with the
    /// tables named (None: all of them). Database sources may name tables discovery will find.
    pub fn select_sources(&self, selectors: &[String]) -> Result<Vec<Selected>, EngineError> {
        let mut picked: Vec<Selected> = Vec::new();
        for s in selectors {
            let (src, table) = match s.split_once('.') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (s.clone(), None),
            };
            let config = self.source(&src)?;
            if let (Some(t), false) = (&table, config.discovers_tables()) {
                if !self
                    .config
                    .source_tables(&src, config)
                    .iter()
                    .any(|x| &x.table == t)
                {
                    return Err(EngineError::Usage(format!(
                        "source `{src}` has no table `{t}`"
                    )));
                }
            }
            match picked.iter_mut().find(|(n, _)| *n == src) {
                Some((_, tables)) => match (tables.as_mut(), table) {
                    (Some(list), Some(t)) => list.push(t),
                    _ => *tables = None,
                },
                None => picked.push((src, table.map(|t| vec![t]))),
            }
        }
        if selectors.is_empty() {
            picked = self
                .config
                .sources
                .keys()
                .map(|k| (k.clone(), None))
                .collect();
        }
        Ok(picked)
    }

    /// Every table the project knows: configured ones, and for database sources that select
    /// all their tables, those already in the lake (with the key the lake recorded).
    pub async fn known_tables(&self) -> Result<Vec<TableSpec>, EngineError> {
        let mut out = Vec::new();
        for (name, src) in &self.config.sources {
            let configured = self.config.source_tables(name, src);
            if !src.discovers_tables() {
                out.extend(configured);
                continue;
            }
            let configured: Vec<String> = configured.into_iter().map(|s| s.table).collect();
            let names: Vec<String> = if configured.is_empty() {
                self.lake.tables_of(name).await?
            } else if configured
                .iter()
                .any(|t| sluice_core::pattern::is_pattern(t))
            {
                // Patterns name the tables they matched: those the lake has, and the named ones.
                let mut names: Vec<String> = self
                    .lake
                    .tables_of(name)
                    .await?
                    .into_iter()
                    .filter(|t| sluice_core::pattern::names(&configured, t))
                    .collect();
                for t in configured
                    .iter()
                    .filter(|t| !sluice_core::pattern::is_pattern(t))
                {
                    if !names.contains(t) {
                        names.push(t.clone());
                    }
                }
                names
            } else {
                configured
            };
            for t in names {
                let key: Vec<String> = sluice_lake::LakeTable::open(
                    &self.lake,
                    &sluice_lake::TablePath::changes(name, &t),
                )
                .await?
                .map(|l| l.primary_key())
                .unwrap_or_default();
                out.push(self.config.table_spec(name, src, &t, &key));
            }
        }
        Ok(out)
    }

    /// Opens a warehouse by name.
    pub fn warehouse(&self, name: &str) -> Result<Box<dyn Warehouse>, EngineError> {
        match self.config.warehouses.get(name) {
            Some(WarehouseConfig::Duckdb {
                path, memory_limit, ..
            }) => Ok(Box::new(DuckDb::open(
                &self.config.resolve_path(path),
                memory_limit
                    .as_deref()
                    .unwrap_or(sluice_core::config::DEFAULT_DUCKDB_MEMORY),
            )?)),
            Some(WarehouseConfig::Postgres { .. }) => {
                Ok(Box::new(Postgres::connect(&self.warehouse_options(name)?)?))
            }
            Some(WarehouseConfig::Redshift { .. }) => Ok(Box::new(self.redshift(name)?)),
            None => Err(EngineError::Usage(format!("no warehouse named `{name}`"))),
        }
    }

    /// Opens a Redshift warehouse by name, with its upkeep.
    pub fn redshift(&self, name: &str) -> Result<Redshift, EngineError> {
        let Some(WarehouseConfig::Redshift {
            iam_role,
            analyze_after_changes,
            vacuum,
            vacuum_every_hours,
            ..
        }) = self.config.warehouses.get(name)
        else {
            return Err(EngineError::Usage(format!(
                "`{name}` is not a Redshift warehouse"
            )));
        };
        Ok(Redshift::connect(
            &self.warehouse_options(name)?,
            Staging::LakeManifest {
                iam_role: iam_role.clone(),
            },
        )?
        .with_maintenance(sluice_warehouses::redshift::Maintenance {
            analyze_after_changes: *analyze_after_changes,
            vacuum: vacuum.clone(),
            vacuum_every: std::time::Duration::from_secs(vacuum_every_hours.unwrap_or(24) * 3600),
        })?)
    }

    /// Connection options of a PostgreSQL-protocol warehouse (PostgreSQL, Redshift), its
    /// password resolved, or for Redshift with `iam_auth` temporary credentials fetched.
    pub fn warehouse_options(&self, name: &str) -> Result<PgOptions, EngineError> {
        let (url, password, ssl_mode, ssl_ca) = match self.config.warehouses.get(name) {
            Some(WarehouseConfig::Postgres {
                url,
                password,
                ssl_mode,
                ssl_ca,
                ..
            })
            | Some(WarehouseConfig::Redshift {
                url,
                password,
                ssl_mode,
                ssl_ca,
                ..
            }) => (url, password, ssl_mode, ssl_ca),
            _ => {
                return Err(EngineError::Usage(format!(
                    "`{name}` is not a PostgreSQL or Redshift warehouse"
                )))
            }
        };
        let mut options = PgOptions {
            url: url.to_string(),
            password: resolve_password(name, password)?,
            ssl_mode: ssl_mode.clone(),
            ssl_ca: ssl_ca.as_ref().map(|p| self.config.resolve_path(p)),
        };
        if let Some((auth, mut u)) = self.iam_auth(name) {
            // A fault on AWS's side or the way there is tried again, like a refused
            // connection; a wrong cluster or missing permission is not.
            let signed_in = sluice_aws::redshift::credentials(&auth).map_err(|e| {
                EngineError::Warehouse(sluice_warehouses::WarehouseError::Open {
                    path: name.to_string(),
                    message: format!("warehouses.{name}.iam_auth: {}", e.message),
                    kind: match e.transient {
                        true => sluice_core::retry::ErrorKind::Transient,
                        false => sluice_core::retry::ErrorKind::Fatal,
                    },
                })
            })?;
            u.set_username(&signed_in.user)
                .map_err(|_| EngineError::Usage(format!("warehouses.{name}.url: has no host")))?;
            options.url = u.to_string();
            options.password = Some(signed_in.password);
        }
        Ok(options)
    }

    /// IAM sign-in of a Redshift warehouse with `iam_auth = true`.
    fn iam_auth(&self, name: &str) -> Option<(sluice_aws::redshift::IamAuth, url::Url)> {
        match self.config.warehouses.get(name) {
            Some(wh @ WarehouseConfig::Redshift { iam_auth: true, .. }) => wh.redshift_iam(),
            _ => None,
        }
    }

    /// The longest identifier a warehouse takes.
    pub(crate) fn identifier_limit(&self, warehouse: &str) -> usize {
        match self.config.warehouses.get(warehouse) {
            Some(WarehouseConfig::Postgres { .. }) => sluice_warehouses::postgres::MAX_IDENTIFIER,
            Some(WarehouseConfig::Redshift { .. }) => sluice_warehouses::redshift::MAX_IDENTIFIER,
            _ => sluice_warehouses::duckdb::MAX_IDENTIFIER,
        }
    }

    /// The warehouse tables a lake table loads into, named for `wh` (see
    /// [`Project::resolve_targets`]).
    pub fn targets_in(
        &self,
        spec: &TableSpec,
        wh: &mut dyn Warehouse,
    ) -> Result<Vec<Target>, EngineError> {
        let rows = wh.ledger_rows()?;
        let mut out = Vec::new();
        for t in self.targets(spec) {
            out.push(resolve_target(
                t,
                &rows,
                wh,
                self.identifier_limit(&spec.warehouse),
            )?);
        }
        Ok(out)
    }

    /// The warehouse tables a lake table loads into, by the naming function alone (before
    /// the warehouse's ledger has its say: see [`Project::targets_in`]).
    pub fn targets(&self, spec: &TableSpec) -> Vec<Target> {
        let limit = self.identifier_limit(&spec.warehouse);
        spec.targets()
            .into_iter()
            .map(|(mode, table)| Target {
                schema: identifier(&spec.source, limit),
                table: identifier(&table, limit),
                mode,
                key: spec.primary_key.clone(),
                deletes: spec.deletes,
                add_columns: false,
                source: spec.source.clone(),
                source_table: spec.table.clone(),
                layout: spec.layout.for_mode(mode),
            })
            .collect()
    }
}

/// A warehouse password, read from where the config keeps it.
fn resolve_password(name: &str, password: &Option<Secret>) -> Result<Option<String>, EngineError> {
    password
        .as_ref()
        .map(|p| p.resolve())
        .transpose()
        .map_err(|e| EngineError::Usage(format!("warehouses.{name}.password: {e}")))
}

/// Gives `t` its warehouse name. Names must be unique per warehouse, but the naming function
/// maps `order-items` and `order_items`, `Orders` and `orders`, or two names equal in their
/// first 63 bytes to one identifier, and `orders_append` may be another table's or a load
/// mode's. The ledger decides, and its decisions never change:
///
/// - a target the ledger already records (its lake table and mode) keeps that name;
/// - a new one takes its mapped name, unless another lake table's target holds it: then
///   the name is told apart by a suffix from its own source, table and mode;
/// - a table sluice's ledger does not know is never loaded into (it is not sluice's), and
///   names starting with `_sluice` are sluice's own.
fn resolve_target(
    mut t: Target,
    rows: &[LedgerRow],
    wh: &mut dyn Warehouse,
    limit: usize,
) -> Result<Target, EngineError> {
    if let Some(row) = rows.iter().find(|r| t.owns(r)) {
        t.schema = row.schema.clone();
        t.table = row.table.clone();
        return Ok(t);
    }
    for name in [&t.schema, &t.table] {
        if is_reserved(name) {
            return Err(EngineError::Usage(format!(
                "{}.{}: warehouse name `{name}` starts with `_sluice`, which is reserved for sluice's own tables; rename the {} (e.g. `table = ...` for files)",
                t.source,
                t.source_table,
                if name == &t.schema { "source" } else { "table" }
            )));
        }
    }
    let taken =
        |schema: &str, table: &str| rows.iter().any(|r| r.schema == schema && r.table == table);
    if taken(&t.schema, &t.table) {
        let origin = format!("{}\0{}\0{}", t.source, t.source_table, t.mode.name());
        let other = disambiguated(&t.table, &origin, limit);
        tracing::warn!(source = %t.source, table = %t.source_table, mode = t.mode.name(), wanted = %t.display(), name = %other, "warehouse name taken by another lake table: told apart");
        if taken(&t.schema, &other) {
            return Err(EngineError::Usage(format!(
                "{}.{}: warehouse tables {} and {}.{other} are both another lake table's",
                t.source,
                t.source_table,
                t.display(),
                t.schema
            )));
        }
        t.table = other;
    }
    if !wh.columns(&t)?.is_empty() {
        return Err(EngineError::Usage(format!(
            "{}.{}: warehouse table {} exists, but sluice's ledger does not know it: it is not sluice's to load. Drop or rename it, or rename the source table",
            t.source,
            t.source_table,
            t.display()
        )));
    }
    Ok(t)
}
