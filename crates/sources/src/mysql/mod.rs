//! MySQL and MariaDB: discovery, consistent chunked snapshots, incremental reads by a cursor
//! column, and the binlog as a replica reads it.
//!
//! - [`columns`]: the one type mapping (MySQL column definition → Arrow).
//! - [`convert`]: values from queries and from binlog row images → Arrow arrays.
//! - [`plan`]: snapshot chunk plans over the primary key's first column.
//! - [`snapshot`]: consistent-snapshot readers of chunks.
//! - [`binlog`]: positions and the change stream, assembled into source transactions.

pub mod binlog;
pub mod canonical;
pub mod columns;
pub mod convert;
mod handoff;
pub mod plan;
pub mod snapshot;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Once;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

use crate::SourceError;
pub use binlog::BinlogPosition;
pub use columns::ColumnDef;
use sluice_core::retry::ErrorKind;

/// How the connection uses TLS (the MySQL client's `--ssl-mode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disabled,
    /// TLS when the server offers it, else plain.
    #[default]
    Preferred,
    /// TLS, without checking the certificate.
    Required,
    /// TLS with a certificate signed by `ssl_ca`.
    VerifyCa,
    /// As `verify_ca`, and the certificate names the host.
    VerifyIdentity,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "disabled" => SslMode::Disabled,
            "preferred" => SslMode::Preferred,
            "required" => SslMode::Required,
            "verify_ca" => SslMode::VerifyCa,
            "verify_identity" => SslMode::VerifyIdentity,
            _ => return None,
        })
    }
}

/// Which server: their binlogs and status commands differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql,
    MariaDb,
}

/// A table as discovered: columns in ordinal order, its key, a size estimate.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
    pub rows_estimate: u64,
}

/// One configured MySQL/MariaDB source.
#[derive(Clone)]
pub struct MySql {
    pub source: String,
    pub database: String,
    opts: Opts,
    ssl_mode: SslMode,
    /// Set once the password crossing an unverified connection has been warned about.
    warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Tables defined by a SELECT (`query = "…"`), by name.
    queries: std::sync::Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for MySql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the password.
        write!(
            f,
            "MySql({} at {}:{}/{})",
            self.source,
            self.opts.ip_or_hostname(),
            self.opts.tcp_port(),
            self.database
        )
    }
}

fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // rustls is built with two providers in this tree; pick one for the process.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

impl MySql {
    /// `table` of this source's database, quoted for SQL.
    pub fn table_ref(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.database), quote(table))
    }

    /// Tables defined by a SELECT rather than stored (`[sources.S.tables.NAME] query`).
    pub fn with_queries(mut self, queries: BTreeMap<String, String>) -> Self {
        self.queries = std::sync::Arc::new(queries);
        self
    }

    /// The SELECT that defines `table`, if a query does.
    pub fn query_of(&self, table: &str) -> Option<&str> {
        self.queries.get(table).map(String::as_str)
    }

    /// What a read of `table` selects FROM: the stored table, or its query as a derived
    /// table of the same name.
    pub fn relation(&self, table: &str) -> String {
        match self.query_of(table) {
            Some(q) => format!("({q}) AS {}", quote(table)),
            None => self.table_ref(table),
        }
    }

    /// `url` is `mysql://user@host:port/database`; the password comes from a secret.
    pub fn new(
        source: &str,
        url: &str,
        password: Option<String>,
        ssl_mode: SslMode,
        ssl_ca: Option<PathBuf>,
    ) -> Result<MySql, SourceError> {
        let err = |message: String| SourceError::Config {
            source_name: source.into(),
            message,
        };
        let base = Opts::from_url(url).map_err(|e| err(format!("url: {e}")))?;
        let database = base
            .db_name()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| err("url names no database: mysql://user@host:port/DATABASE".into()))?
            .to_string();
        let mut builder = OptsBuilder::from_opts(base)
            .init(vec![
                // Values arrive as UTC and UTF-8 whatever the server's defaults.
                "SET time_zone = '+00:00'",
                "SET NAMES utf8mb4",
            ])
            .stmt_cache_size(16)
            .tcp_nodelay(true);
        if let Some(p) = password {
            builder = builder.pass(Some(p));
        }
        let ssl = match ssl_mode {
            SslMode::Disabled => None,
            SslMode::Preferred | SslMode::Required => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            SslMode::VerifyCa | SslMode::VerifyIdentity => {
                let ca = ssl_ca.ok_or_else(|| {
                    err(
                        "ssl_mode verify_ca / verify_identity needs ssl_ca = \"/path/ca.pem\""
                            .into(),
                    )
                })?;
                Some(
                    SslOpts::default()
                        .with_root_certs(vec![ca.into()])
                        .with_danger_skip_domain_validation(ssl_mode == SslMode::VerifyCa),
                )
            }
        };
        if ssl.is_some() {
            install_tls_provider();
        }
        builder = builder.ssl_opts(ssl);
        Ok(MySql {
            source: source.into(),
            database,
            opts: builder.into(),
            ssl_mode,
            warned: Default::default(),
            queries: Default::default(),
        })
    }

    pub fn err(&self, message: impl Into<String>) -> SourceError {
        SourceError::Config {
            source_name: self.source.clone(),
            message: message.into(),
        }
    }

    /// A driver or server error while `doing`, of the kind its code says.
    pub fn db_err(&self, doing: &str, e: mysql_async::Error) -> SourceError {
        let (source_name, message) = (self.source.clone(), format!("{doing}: {e}"));
        match error_kind(&e) {
            ErrorKind::Transient => SourceError::Unavailable {
                source_name,
                message,
            },
            ErrorKind::PositionLost => SourceError::PositionLost {
                source_name,
                message,
            },
            _ => SourceError::Config {
                source_name,
                message,
            },
        }
    }

    /// A connection in UTC and utf8mb4.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        let host = format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port());
        match Conn::new(self.opts.clone()).await {
            Ok(c) => {
                self.warn_unverified(false);
                Ok(c)
            }
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.ssl_mode == SslMode::Preferred => {
                tracing::debug!(source = %self.source, "server offers no TLS; connecting without");
                let plain = OptsBuilder::from_opts(self.opts.clone()).ssl_opts(None::<SslOpts>);
                let conn = Conn::new(plain)
                    .await
                    .map_err(|e| self.db_err(&format!("connecting to {host}"), e))?;
                self.warn_unverified(true);
                Ok(conn)
            }
            Err(e) => Err(self.db_err(&format!("connecting to {host}"), e)),
        }
    }

    /// Warns once per source when its password crosses a connection whose server is not
    /// verified (`preferred` and `required` accept any certificate, as the MySQL client
    /// does) or not encrypted at all.
    fn warn_unverified(&self, plaintext: bool) {
        use std::sync::atomic::Ordering;
        let verified = matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyIdentity);
        if verified || self.opts.pass().is_none() || self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let how = match plaintext || self.ssl_mode == SslMode::Disabled {
            true => "unencrypted",
            false => "encrypted to a server whose certificate is not checked",
        };
        tracing::warn!(
            source = %self.source,
            "the password crosses a connection {how}; in production set ssl_mode = \"verify_identity\" and ssl_ca"
        );
    }

    pub async fn flavor(&self, conn: &mut Conn) -> Result<Flavor, SourceError> {
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| self.db_err("reading the server version", e))?;
        Ok(if version.unwrap_or_default().contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        })
    }

    /// Tables of the database (all base tables, or those named), with columns and keys; a
    /// name with a query is that query's result, whatever the database stores by that name.
    pub async fn discover(
        &self,
        conn: &mut Conn,
        selected: Option<&[String]>,
    ) -> Result<Vec<TableInfo>, SourceError> {
        let names: Vec<(String, Option<u64>)> = conn
            .exec(
                "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                (&self.database,),
            )
            .await
            .map_err(|e| self.db_err("listing tables", e))?;
        let queried: Vec<&String> = match selected {
            Some(sel) => sel
                .iter()
                .filter(|s| self.queries.contains_key(*s))
                .collect(),
            None => Vec::new(),
        };
        if let Some(sel) = selected {
            let missing: Vec<&String> = sel
                .iter()
                .filter(|s| !queried.contains(s) && !names.iter().any(|(n, _)| n == *s))
                .collect();
            if !missing.is_empty() {
                return Err(self.err(format!(
                    "database `{}` has no table {}",
                    self.database,
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut out = Vec::new();
        for (name, rows) in names {
            if selected.is_some_and(|s| !s.contains(&name)) || queried.contains(&&name) {
                continue;
            }
            let columns = self.columns(conn, &name).await?;
            let primary_key: Vec<String> = conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                     ORDER BY ORDINAL_POSITION",
                    (&self.database, &name),
                )
                .await
                .map_err(|e| self.db_err(&format!("reading the key of `{name}`"), e))?;
            out.push(TableInfo {
                name,
                columns,
                primary_key,
                rows_estimate: rows.unwrap_or(0),
            });
        }
        for name in queried {
            out.push(TableInfo {
                name: name.clone(),
                columns: self.query_columns(conn, name).await?,
                // A result has no declared key: `primary_key` in the config gives one.
                primary_key: Vec::new(),
                rows_estimate: 0,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The columns a query-defined table's SELECT returns, as the server types them: its
    /// empty result made a temporary table (private to this connection, never logged), whose
    /// definitions take the same path as a stored table's.
    async fn query_columns(
        &self,
        conn: &mut Conn,
        table: &str,
    ) -> Result<Vec<ColumnDef>, SourceError> {
        const PROBE: &str = "`_sluice_query_columns`";
        let query = self.query_of(table).unwrap_or_default();
        let doing = format!("typing the query of table `{table}`");
        conn.query_drop(format!("DROP TEMPORARY TABLE IF EXISTS {PROBE}"))
            .await
            .map_err(|e| self.db_err(&doing, e))?;
        conn.query_drop(format!(
            "CREATE TEMPORARY TABLE {PROBE} AS SELECT * FROM ({query}) AS {} LIMIT 0",
            quote(table)
        ))
        .await
        .map_err(|e| {
            self.db_err(
                &format!("{doing} (it needs the CREATE TEMPORARY TABLES privilege)"),
                e,
            )
        })?;
        let described: Result<Vec<mysql_async::Row>, _> =
            conn.query(format!("SHOW FULL COLUMNS FROM {PROBE}")).await;
        let _ = conn
            .query_drop(format!("DROP TEMPORARY TABLE IF EXISTS {PROBE}"))
            .await;
        let described = described.map_err(|e| self.db_err(&doing, e))?;
        described
            .into_iter()
            .map(|row| {
                let text =
                    |i: usize| -> Option<String> { row.get_opt::<Option<String>, _>(i)?.ok()? };
                let (Some(name), Some(column_type)) = (text(0), text(1)) else {
                    return Err(
                        self.err(format!("{doing}: SHOW FULL COLUMNS gave an unreadable row"))
                    );
                };
                Ok(ColumnDef {
                    data_type: data_type_of(&column_type),
                    // `utf8mb4_general_ci` → `utf8mb4`; `binary` for binary strings.
                    charset: text(2).map(|c| c.split('_').next().unwrap_or_default().to_string()),
                    nullable: text(3).as_deref() == Some("YES"),
                    name,
                    column_type,
                })
            })
            .collect()
    }

    /// One table's column definitions in ordinal order.
    pub async fn columns(
        &self,
        conn: &mut Conn,
        table: &str,
    ) -> Result<Vec<ColumnDef>, SourceError> {
        type Row = (String, String, String, Option<String>, String);
        let rows: Vec<Row> = conn
            .exec(
                "SELECT COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE, CHARACTER_SET_NAME, IS_NULLABLE \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (&self.database, table),
            )
            .await
            .map_err(|e| self.db_err(&format!("reading the columns of `{table}`"), e))?;
        Ok(rows
            .into_iter()
            .map(
                |(name, data_type, column_type, charset, nullable)| ColumnDef {
                    name,
                    data_type,
                    column_type,
                    charset,
                    nullable: nullable == "YES",
                },
            )
            .collect())
    }
}

/// `DATA_TYPE` of a `COLUMN_TYPE`: `int(10) unsigned` → `int`, `enum('A')` → `enum`.
fn data_type_of(column_type: &str) -> String {
    column_type
        .split(['(', ' '])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// `db`.`table` with every identifier quoted for MySQL.
pub fn quote(ident: &str) -> String {
    sluice_core::names::quote_backticked(ident)
}

/// What a MySQL/MariaDB error means for a retry, by its error code
/// (<https://mariadb.com/kb/en/mariadb-error-code-reference/>).
pub fn error_kind(e: &mysql_async::Error) -> ErrorKind {
    use mysql_async::{DriverError, Error};
    match e {
        Error::Io(_) => ErrorKind::Transient,
        Error::Driver(DriverError::ConnectionClosed | DriverError::PoolDisconnected) => {
            ErrorKind::Transient
        }
        Error::Server(s) => match s.code {
            // The binlog file asked for is gone (purged): ER_MASTER_FATAL_ERROR_READING_BINLOG.
            1236 => ErrorKind::PositionLost,
            // Too many connections, server shutdown, network read/write errors and timeouts,
            // query interrupted, lock wait timeout, deadlock, connection killed, server gone.
            1040 | 1053 | 1152 | 1153 | 1158..=1161 | 1317 | 1205 | 1213 | 1927 | 2006 | 2013 => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Fatal,
        },
        _ => ErrorKind::Fatal,
    }
}
