//! Connections to PostgreSQL, shared by the PostgreSQL warehouse, Redshift, the state store
//! and the PostgreSQL source: one reading of a `postgres://` URL and its TLS settings, one
//! TLS setup (libpq's `sslmode` meanings, through rustls), one reading of the server's
//! errors for retries and messages.

mod tls;

use sluice_core::names::percent_decode;
use sluice_core::retry::ErrorKind;
use tokio_postgres::{Client, NoTls};

/// How to reach the server.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db`; `sslmode` and `sslrootcert` may also be URL parameters.
    pub url: String,
    pub password: Option<String>,
    /// disable | prefer (default) | require | verify-ca | verify-full.
    pub ssl_mode: Option<String>,
    /// CA certificate (PEM) for verify-ca / verify-full.
    pub ssl_ca: Option<String>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "redacted"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca", &self.ssl_ca)
            .finish()
    }
}

/// What a PostgreSQL error means for a retry, by its SQLSTATE
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>): connection exceptions
/// (08), serialization failures and deadlocks (40001, 40P01), insufficient resources (53),
/// shutdowns and cancels (57P01-57P03, 57014) and lock timeouts (55P03) may pass; a closed
/// connection or an I/O error too; anything else is fatal.
pub fn pg_kind(e: &tokio_postgres::Error) -> ErrorKind {
    match e.code().map(|c| c.code()) {
        Some(c) if c.starts_with("08") || c.starts_with("53") => ErrorKind::Transient,
        Some("40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03") => {
            ErrorKind::Transient
        }
        Some(_) => ErrorKind::Fatal,
        None if e.is_closed() => ErrorKind::Transient,
        None => match std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
            true => ErrorKind::Transient,
            false => ErrorKind::Fatal,
        },
    }
}

/// A tokio-postgres error with the server's message, detail and hint when there are any.
pub fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m += &format!("; {d}");
            }
            if let Some(h) = db.hint() {
                m += &format!("; hint: {h}");
            }
            if let Some(w) = db.where_() {
                m += &format!("; at {w}");
            }
            m
        }
        None => {
            // The cause (a TLS or I/O error) is in the source chain, not the message.
            let mut m = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                m += &format!(": {c}");
                cause = c.source();
            }
            m
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    #[error("{}", server_message(.0))]
    Pg(#[from] tokio_postgres::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The URL without user info, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "(unparsable url)".into(),
    }
}

/// Opens a connection (TLS by `ssl_mode`) whose driver runs on the caller's runtime.
pub async fn open_client(
    config: tokio_postgres::Config,
    ssl_mode: &str,
    ssl_ca: Option<String>,
) -> Result<Client, PgConnectError> {
    if ssl_mode == "disable" {
        let (client, conn) = config.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    } else {
        let tls = tls::connector(ssl_mode, ssl_ca.as_deref()).map_err(PgConnectError::Tls)?;
        let (client, conn) = config.connect(tls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

/// A plain client for sluice's own bookkeeping (serve's state store), on the caller's
/// runtime, with the warehouse's URL, password and TLS rules. Errors name the server, never
/// the password.
pub async fn connect_client(opts: &PgOptions) -> Result<Client, String> {
    let (config, ssl_mode, ssl_ca) = pg_config(opts)?;
    open_client(config, &ssl_mode, ssl_ca)
        .await
        .map_err(|e| format!("{}: {e}", redacted(&opts.url)))
}

/// The connection settings from the URL and options; returns the TLS mode and CA file too
/// (`sslmode`/`sslrootcert` URL parameters are read like libpq's; the options win).
pub fn pg_config(
    opts: &PgOptions,
) -> Result<(tokio_postgres::Config, String, Option<String>), String> {
    let u = url::Url::parse(&opts.url).map_err(|e| format!("url: {e}"))?;
    if u.scheme() != "postgres" && u.scheme() != "postgresql" {
        return Err("url must start with postgres://".into());
    }
    let mut config = tokio_postgres::Config::new();
    config.application_name("sluice");
    let user = if u.username().is_empty() {
        "postgres".to_string()
    } else {
        percent_decode(u.username())
    };
    config.user(&user);
    if let Some(p) = &opts.password {
        config.password(p);
    }
    config.dbname(percent_decode(u.path().trim_start_matches('/')));
    config.port(u.port().unwrap_or(5432));
    let mut ssl_mode = opts.ssl_mode.clone();
    let mut ssl_ca = opts.ssl_ca.clone();
    let mut host = u.host_str().map(String::from);
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "sslmode" if ssl_mode.is_none() => ssl_mode = Some(v.into_owned()),
            "sslrootcert" if ssl_ca.is_none() => ssl_ca = Some(v.into_owned()),
            // A Unix socket folder, as libpq takes it.
            "host" => host = Some(v.into_owned()),
            "sslmode" | "sslrootcert" => {}
            other => {
                return Err(format!(
                    "url parameter `{other}` is not supported (sslmode, sslrootcert, host are)"
                ))
            }
        }
    }
    config.host(host.as_deref().unwrap_or("localhost"));
    let ssl_mode = ssl_mode.unwrap_or_else(|| "prefer".into());
    config.ssl_mode(match ssl_mode.as_str() {
        "disable" => tokio_postgres::config::SslMode::Disable,
        "prefer" => tokio_postgres::config::SslMode::Prefer,
        "require" | "verify-ca" | "verify-full" => tokio_postgres::config::SslMode::Require,
        other => {
            return Err(format!(
                "ssl_mode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    });
    if ssl_mode.starts_with("verify") && ssl_ca.is_none() {
        return Err(format!(
            "ssl_mode {ssl_mode} needs ssl_ca (the CA certificate file)"
        ));
    }
    Ok((config, ssl_mode, ssl_ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_and_options() {
        let (c, mode, ca) = pg_config(&PgOptions {
            url: "postgres://load%40er@db.example:6543/wh?sslmode=verify-full&sslrootcert=/ca.pem"
                .into(),
            password: Some("pw".into()),
            ssl_mode: None,
            ssl_ca: None,
        })
        .unwrap();
        assert_eq!(c.get_user(), Some("load@er"));
        assert_eq!(c.get_dbname(), Some("wh"));
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(
            (mode.as_str(), ca.as_deref()),
            ("verify-full", Some("/ca.pem"))
        );
        let err = pg_config(&PgOptions {
            url: "postgres://u@h/db?sslmode=verify-ca".into(),
            password: None,
            ssl_mode: None,
            ssl_ca: None,
        })
        .unwrap_err();
        assert!(err.contains("ssl_ca"), "{err}");
        assert!(pg_config(&PgOptions {
            url: "postgres://u@h/db?options=x".into(),
            password: None,
            ssl_mode: None,
            ssl_ca: None,
        })
        .unwrap_err()
        .contains("options"));
    }
}
