//! `sluice check`: the config is valid (already, or `Project::open` failed), and then every
//! part is reachable: the lake, each source's location, each warehouse.

use serde::Serialize;

use crate::Project;

#[derive(Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

pub async fn check(project: &Project) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check {
        what: "config".into(),
        ok: true,
        detail: "valid".into(),
    });
    let lake = project.lake.root().to_string();
    out.push(
        match sluice_core::store::store_for(project.lake.root(), &project.store_options()) {
            Ok((store, path)) => match futures::StreamExt::next(&mut store.list(Some(&path))).await
            {
                Some(Err(e)) => Check {
                    what: format!("lake {lake}"),
                    ok: false,
                    detail: e.to_string(),
                },
                _ => Check {
                    what: format!("lake {lake}"),
                    ok: true,
                    detail: "reachable".into(),
                },
            },
            Err(e) => Check {
                what: format!("lake {lake}"),
                ok: false,
                detail: e,
            },
        },
    );
    for (name, src) in &project.config.sources {
        let what = format!("source {name} ({})", src.location());
        let checked = match crate::sources::build(project, name) {
            Ok(source) => source.check().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push(match checked {
            Ok(detail) => Check {
                what,
                ok: true,
                detail,
            },
            Err(detail) => Check {
                what,
                ok: false,
                detail,
            },
        });
    }
    for name in project.config.warehouses.keys() {
        let what = format!("warehouse {name}");
        out.push(match project.warehouse(name) {
            Ok(w) => Check {
                what,
                ok: true,
                detail: format!("opened {}", w.describe()),
            },
            Err(e) => Check {
                what,
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    for (name, report) in &project.config.reports {
        let what = format!("report {name}");
        let schedule = report
            .schedule
            .as_deref()
            .unwrap_or(sluice_core::config::DEFAULT_REPORT_SCHEDULE);
        out.push(match crate::query::table_references(&report.sql) {
            Ok(tables) => Check {
                what,
                ok: true,
                detail: format!(
                    "reads {}; writes {} ({schedule})",
                    tables
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    report.out
                ),
            },
            Err(e) => Check {
                what,
                ok: false,
                detail: format!("its SQL does not parse: {e}"),
            },
        });
    }
    out
}
