//! `sluice redshift analyze-compression SOURCE.TABLE`: the encodings Redshift suggests for
//! each warehouse table of a lake table (`ANALYZE COMPRESSION`), applied with `--apply`.

use serde::Serialize;

use sluice_warehouses::redshift::maintenance::Suggestion;

use crate::schema_cmd::spec_of;
use crate::{EngineError, Project};

#[derive(Debug, Serialize)]
pub struct CompressionReport {
    pub target: String,
    pub suggestions: Vec<Suggestion>,
    /// The statements run (`--apply`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
}

/// Runs `ANALYZE COMPRESSION` on every warehouse table `name` (`SOURCE.TABLE`) loads, and
/// with `apply` alters each column whose suggested encoding would shrink it.
pub async fn analyze_compression(
    project: &Project,
    name: &str,
    apply: bool,
) -> Result<Vec<CompressionReport>, EngineError> {
    let spec = spec_of(project, name).await?;
    let mut wh = project.redshift(&spec.warehouse)?;
    let targets = project.targets_in(&spec, &mut wh)?;
    let mut out = Vec::new();
    for t in targets {
        let suggestions = wh.analyze_compression(&t)?;
        let applied = match apply {
            true => wh.apply_encodings(&t, &suggestions)?,
            false => Vec::new(),
        };
        tracing::info!(target = %t.display(), columns = suggestions.len(), applied = applied.len(), "ANALYZE COMPRESSION");
        out.push(CompressionReport {
            target: t.display(),
            suggestions,
            applied,
        });
    }
    Ok(out)
}

pub fn render(reports: &[CompressionReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out += &format!("{}:\n", r.target);
        for s in &r.suggestions {
            out += &format!(
                "  {:<32} {:<10} {:>6.2}% smaller\n",
                s.column, s.encoding, s.reduction_pct
            );
        }
        for a in &r.applied {
            out += &format!("  applied: {a}\n");
        }
        if r.applied.is_empty() && r.suggestions.iter().any(|s| s.reduction_pct > 0.0) {
            out += "  (run again with --apply to alter these columns)\n";
        }
    }
    out
}
