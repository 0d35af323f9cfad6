//! The PostgreSQL source: the tables of one schema, read by snapshot (chunks of the key,
//! read in parallel inside one exported snapshot, as binary COPY) or past a cursor column.
//! Connections, TLS and error kinds are [`sluice_pg`]'s, shared with the PostgreSQL
//! warehouse; the type mapping is [`columns`]'.

pub mod columns;
pub mod rows;
pub mod snapshot;
pub mod source;

use std::collections::BTreeMap;

use sluice_core::names::quote_ident;
use sluice_core::retry::ErrorKind;
use sluice_pg::{open_client, pg_config, pg_kind, redacted, server_message, PgConnectError};
use tokio_postgres::Client;

pub use sluice_pg::PgOptions;

use crate::SourceError;
use columns::ColumnDef;

/// How to reach the server, and the schema read.
#[derive(Debug, Clone)]
pub struct Pg {
    pub source: String,
    options: PgOptions,
    pub schema: String,
}

/// A table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
    pub rows_estimate: u64,
}

/// Every session reads values the same way, whatever the server's defaults (see
/// [`columns`]).
const SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3";

impl Pg {
    pub fn new(source: &str, options: PgOptions, schema: &str) -> Pg {
        Pg {
            source: source.into(),
            options,
            schema: schema.into(),
        }
    }

    /// `host:port/database`, for messages (never the password).
    pub fn location(&self) -> String {
        redacted(&self.options.url)
    }

    /// `table` of the schema, quoted for SQL.
    pub fn table_ref(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    /// A new session, its connection driven on the caller's runtime.
    pub async fn connect(&self) -> Result<Client, SourceError> {
        let (config, ssl_mode, ssl_ca) = pg_config(&self.options).map_err(|m| self.err(m))?;
        let client = open_client(config, &ssl_mode, ssl_ca)
            .await
            .map_err(|e| match e {
                PgConnectError::Pg(e) => {
                    self.db_err(&format!("connecting to {}", self.location()), e)
                }
                PgConnectError::Tls(m) => {
                    self.err(format!("connecting to {}: TLS: {m}", self.location()))
                }
            })?;
        client
            .batch_execute(SESSION)
            .await
            .map_err(|e| self.db_err("setting up the session", e))?;
        Ok(client)
    }

    pub fn err(&self, message: impl Into<String>) -> SourceError {
        SourceError::Config {
            source_name: self.source.clone(),
            message: message.into(),
        }
    }

    /// A server error while doing `what`: transient when the server says a retry may pass.
    pub fn db_err(&self, what: &str, e: tokio_postgres::Error) -> SourceError {
        let message = format!("{what}: {}", server_message(&e));
        match pg_kind(&e) {
            ErrorKind::Transient => SourceError::Unavailable {
                source_name: self.source.clone(),
                message,
            },
            _ => SourceError::Config {
                source_name: self.source.clone(),
                message,
            },
        }
    }

    /// The tables of the schema (`selected`: those only, each of which must exist), with
    /// their columns, primary keys and row estimates. Partitioned tables are read whole
    /// through their parent; partitions are not tables of their own.
    pub async fn discover(
        &self,
        client: &Client,
        selected: Option<&[String]>,
    ) -> Result<Vec<TableInfo>, SourceError> {
        let what = format!("reading the catalog of schema `{}`", self.schema);
        let tables = client
            .query(
                "SELECT c.relname::text, GREATEST(c.reltuples, 0)::int8
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                  ORDER BY 1",
                &[&self.schema],
            )
            .await
            .map_err(|e| self.db_err(&what, e))?;
        let columns = client
            .query(
                "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                        COALESCE(bt.typname, t.typname)::text,
                        COALESCE(bt.typtype, t.typtype)::text,
                        COALESCE(bt.typcategory, t.typcategory)::text,
                        CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END
                   FROM pg_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                   LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY c.relname, a.attnum",
                &[&self.schema],
            )
            .await
            .map_err(|e| self.db_err(&what, e))?;
        let keys = client
            .query(
                "SELECT c.relname::text, a.attname::text
                   FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) ON true
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                  WHERE n.nspname = $1 AND i.indisprimary
                  ORDER BY c.relname, k.ord",
                &[&self.schema],
            )
            .await
            .map_err(|e| self.db_err(&what, e))?;
        let mut defs: BTreeMap<String, Vec<ColumnDef>> = BTreeMap::new();
        for r in &columns {
            defs.entry(r.get(0)).or_default().push(ColumnDef {
                name: r.get(1),
                column_type: r.get(2),
                type_name: r.get(3),
                type_type: r.get(4),
                category: r.get(5),
                typmod: r.get(6),
            });
        }
        let mut pks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &keys {
            pks.entry(r.get(0)).or_default().push(r.get(1));
        }
        let found: Vec<TableInfo> = tables
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                TableInfo {
                    columns: defs.remove(&name).unwrap_or_default(),
                    primary_key: pks.remove(&name).unwrap_or_default(),
                    rows_estimate: r.get::<_, i64>(1) as u64,
                    name,
                }
            })
            .collect();
        let Some(selected) = selected else {
            return Ok(found);
        };
        let mut out = Vec::with_capacity(selected.len());
        for name in selected {
            match found.iter().find(|t| &t.name == name) {
                Some(t) => out.push(t.clone()),
                None => {
                    return Err(self.err(format!(
                        "table `{name}` is not a table of schema `{}` ({} there: {})",
                        self.schema,
                        found.len(),
                        found
                            .iter()
                            .map(|t| t.name.as_str())
                            .take(20)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        Ok(out)
    }
}
