//! The one place sources are built: a config section in, a [`Source`] out. Adding a kind is
//! one arm here (and its module in `sluice-sources`, its variant in `SourceConfig`).

use std::sync::Arc;

use sluice_core::config::{FilesConfig, Mode, MysqlConfig, SourceConfig};
use sluice_sources::files::FilesSource;
use sluice_sources::mysql::source::MySqlSource;
use sluice_sources::mysql::{MySql, SslMode};
use sluice_sources::source::SharedSource;

use crate::{EngineError, Project};

/// The source configured as `name`.
pub fn build(project: &Project, name: &str) -> Result<SharedSource, EngineError> {
    match project.source(name)? {
        SourceConfig::Files(files) => files_source(project, name, files),
        SourceConfig::Mysql(mysql) => mysql_source(project, name, mysql),
        other => Err(EngineError::Usage(format!(
            "source {name}: kind {} is not available in this build",
            other.kind()
        ))),
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
    let password = match &src.password {
        Some(s) => Some(
            s.resolve()
                .map_err(|m| EngineError::Usage(format!("source {name}: password: {m}")))?,
        ),
        None => None,
    };
    let ssl_mode = src
        .ssl_mode
        .as_deref()
        .and_then(SslMode::parse)
        .unwrap_or_default();
    let ssl_ca = src
        .ssl_ca
        .as_deref()
        .map(|p| project.config.resolve_path(p).into());
    Ok(MySql::new(name, &src.url, password, ssl_mode, ssl_ca)?)
}

fn mysql_source(
    project: &Project,
    name: &str,
    src: &MysqlConfig,
) -> Result<SharedSource, EngineError> {
    let configured = project
        .config
        .source_tables(name, project.source(name)?)
        .into_iter()
        .map(|s| s.table)
        .collect();
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
