//! The one place sources are built: a config section in, a [`Source`] out. Adding a kind is
//! one arm here (and its module in `sluice-sources`, its variant in `SourceConfig`).

use std::sync::Arc;

use sluice_core::config::{
    EventsConfig, FilesConfig, Mode, MongodbConfig, MysqlConfig, Nested, PostgresConfig,
    SourceConfig, DEFAULT_DEDUPE_SECS, DEFAULT_EVENTS_BUFFER_MB, DEFAULT_MAX_DEPTH,
    DEFAULT_SAMPLE_DOCS,
};
use sluice_core::secret::Secret;
use sluice_sources::events::intake::Intake;
use sluice_sources::events::{EventsSource, RecentIds};
use sluice_sources::files::FilesSource;
use sluice_sources::mongodb::source::MongoSource;
use sluice_sources::mongodb::{Mongo, Settings};
use sluice_sources::mysql::source::MySqlSource;
use sluice_sources::mysql::{MySql, SslMode};
use sluice_sources::postgres::source::PgSource;
use sluice_sources::postgres::{Pg, PgOptions};
use sluice_sources::source::SharedSource;

use crate::{EngineError, Project};

/// The source configured as `name`.
pub fn build(project: &Project, name: &str) -> Result<SharedSource, EngineError> {
    match project.source(name)? {
        SourceConfig::Files(files) => files_source(project, name, files),
        SourceConfig::Mysql(mysql) => mysql_source(project, name, mysql),
        SourceConfig::Mongodb(mongo) => mongodb_source(project, name, mongo),
        SourceConfig::Postgres(pg) => postgres_source(project, name, pg),
        SourceConfig::Events(events) => events_source(project, name, events),
        SourceConfig::Transforms(transforms) => Ok(Arc::new(
            crate::transform::TransformSource::new(project.lake.clone(), transforms),
        )),
    }
}

fn files_source(
    project: &Project,
    name: &str,
    src: &FilesConfig,
) -> Result<SharedSource, EngineError> {
    let spec = project
        .config
        .table_spec(name, project.source(name)?, &src.table_name(name), &[]);
    let url = project.config.resolve_path(&src.url);
    let source = FilesSource::new(name, &spec.table, src, &url, &project.store_options())?
        .with_key(&spec.primary_key);
    Ok(Arc::new(source))
}

/// The MySQL/MariaDB connection settings of a source (its password resolved).
pub fn mysql_of(project: &Project, name: &str, src: &MysqlConfig) -> Result<MySql, EngineError> {
    let password = password_of(name, src.password.as_ref())?;
    let ssl_mode = src
        .ssl_mode
        .as_deref()
        .and_then(SslMode::parse)
        .unwrap_or_default();
    let ssl_ca = src
        .ssl_ca
        .as_deref()
        .map(|p| project.config.resolve_path(p).into());
    Ok(MySql::new(name, &src.url, password, ssl_mode, ssl_ca)?.with_queries(src.queries()))
}

fn mysql_source(
    project: &Project,
    name: &str,
    src: &MysqlConfig,
) -> Result<SharedSource, EngineError> {
    let configured = configured_tables(project, name)?;
    let mut source = MySqlSource::new(
        mysql_of(project, name, src)?,
        src.server_id,
        configured,
        src.mode() == Mode::Cdc,
    );
    if let Some(mb) = src.txn_buffer_mb {
        source = source.with_txn_buffer_bytes(mb << 20);
    }
    Ok(Arc::new(source))
}

fn postgres_source(
    project: &Project,
    name: &str,
    src: &PostgresConfig,
) -> Result<SharedSource, EngineError> {
    let options = PgOptions {
        url: src.url.clone(),
        password: password_of(name, src.password.as_ref())?,
        ssl_mode: src.ssl_mode.clone(),
        ssl_ca: src
            .ssl_ca
            .as_deref()
            .map(|p| project.config.resolve_path(p)),
    };
    Ok(Arc::new(PgSource::new(
        Pg::new(name, options, src.schema()),
        configured_tables(project, name)?,
    )))
}

fn mongodb_source(
    project: &Project,
    name: &str,
    src: &MongodbConfig,
) -> Result<SharedSource, EngineError> {
    let password = password_of(name, src.password.as_ref())?;
    let path = |p: &Option<String>| p.as_deref().map(|p| project.config.resolve_path(p).into());
    let settings = Settings {
        url: src.url.clone(),
        password,
        tls: src.tls,
        tls_ca_file: path(&src.tls_ca_file),
        tls_cert_key_file: path(&src.tls_cert_key_file),
        read_preference: src.read_preference.clone(),
    };
    let configured = configured_tables(project, name)?;
    let flatten = match src.nested {
        Some(Nested::Flatten) => src.max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
        _ => 0,
    };
    Ok(Arc::new(MongoSource::new(
        Mongo::new(name, settings)?,
        configured,
        flatten,
        src.sample_docs.unwrap_or(DEFAULT_SAMPLE_DOCS),
    )))
}

/// Events source `name`'s intake, shared by its stream and the HTTP handler.
pub fn events_intake(project: &Project, name: &str, src: &EventsConfig) -> Arc<Intake> {
    let mb = src.buffer_mb.unwrap_or(DEFAULT_EVENTS_BUFFER_MB);
    project.collectors.intake(name, mb << 20)
}

fn events_source(
    project: &Project,
    name: &str,
    src: &EventsConfig,
) -> Result<SharedSource, EngineError> {
    let settings = sluice_sources::events::Settings {
        tables: src.table_names(),
        id_field: src.id_field.clone(),
        time_field: src.time_field.clone(),
        flatten: src.flatten(),
        dedupe: std::time::Duration::from_secs(src.dedupe_secs.unwrap_or(DEFAULT_DEDUPE_SECS)),
    };
    let (lake, source) = (project.lake.clone(), name.to_string());
    let recent: RecentIds = Arc::new(move |table, column, since| {
        let (lake, source) = (lake.clone(), source.clone());
        Box::pin(async move {
            crate::query::recent_values(&lake, &source, &table, &column, since)
                .await
                .map_err(|e| e.to_string())
        })
    });
    Ok(Arc::new(EventsSource::new(
        name,
        settings,
        events_intake(project, name, src),
        recent,
    )))
}

/// A source's password, resolved from the environment or its file.
fn password_of(name: &str, secret: Option<&Secret>) -> Result<Option<String>, EngineError> {
    secret
        .map(|s| {
            s.resolve()
                .map_err(|m| EngineError::Usage(format!("source {name}: password: {m}")))
        })
        .transpose()
}

/// The tables a database source's config names (empty: every one it finds).
fn configured_tables(project: &Project, name: &str) -> Result<Vec<String>, EngineError> {
    Ok(project
        .config
        .source_tables(name, project.source(name)?)
        .into_iter()
        .map(|s| s.table)
        .collect())
}
