//! `sluice query … --out FILE`: query results written as a file (CSV, JSON, JSON lines or
//! Parquet, by the name's extension), to a local path or an `s3://` URL.

use arrow::array::RecordBatch;
use object_store::ObjectStoreExt;

use sluice_core::config::OutputFile;

use crate::query::{render, OutputFormat};
use crate::{EngineError, Project};

fn format_of(dest: &str) -> Result<OutputFile, EngineError> {
    OutputFile::of(dest).map_err(|e| EngineError::Usage(format!("--out {e}")))
}

fn encode(batches: &[RecordBatch], format: OutputFile) -> Result<Vec<u8>, EngineError> {
    let err = |e: String| EngineError::Internal(format!("writing results: {e}"));
    match format {
        OutputFile::Csv => Ok(render(batches, OutputFormat::Csv)?.into_bytes()),
        OutputFile::Json => Ok(render(batches, OutputFormat::Json)?.into_bytes()),
        OutputFile::JsonLines => {
            let mut buf = Vec::new();
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            for b in batches {
                w.write(b).map_err(|e| err(e.to_string()))?;
            }
            w.finish().map_err(|e| err(e.to_string()))?;
            Ok(buf)
        }
        OutputFile::Parquet => {
            let Some(first) = batches.first() else {
                return Err(EngineError::Usage(
                    "--out: the query returned no batches to take the columns from".into(),
                ));
            };
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, first.schema(), None)
                .map_err(|e| err(e.to_string()))?;
            for b in batches {
                w.write(b).map_err(|e| err(e.to_string()))?;
            }
            w.close().map_err(|e| err(e.to_string()))?;
            Ok(buf)
        }
    }
}

/// Writes `batches` to `dest` (a path, relative to the working folder as a command-line path
/// is, or a URL). Returns the bytes written.
pub async fn write_out(
    project: &Project,
    batches: &[RecordBatch],
    dest: &str,
) -> Result<usize, EngineError> {
    let bytes = encode(batches, format_of(dest)?)?;
    let n = bytes.len();
    if dest.contains("://") {
        let url =
            url::Url::parse(dest).map_err(|e| EngineError::Usage(format!("--out {dest}: {e}")))?;
        let (store, path) = sluice_core::store::store_for(&url, &project.store_options())
            .map_err(|m| EngineError::Usage(format!("--out {m}")))?;
        store
            .put(&path, bytes.into())
            .await
            .map_err(|e| EngineError::Internal(format!("--out {dest}: {e}")))?;
        return Ok(n);
    }
    let path = std::path::PathBuf::from(dest);
    let io = |source| EngineError::Io {
        context: format!("--out {}", path.display()),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // Whole or not at all: a reader never sees half a file (an S3 put is already so).
    let mut partial = path.clone().into_os_string();
    partial.push(format!(".partial-{}", std::process::id()));
    std::fs::write(&partial, bytes).map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)?;
    Ok(n)
}
