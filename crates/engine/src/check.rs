//! `sluice check`: the config is valid (already, or `Project::open` failed), and then every
//! part is reachable: the lake, each source's location, each warehouse.

use serde::Serialize;

use sluice_sources::files::FilesSource;

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
    for spec in project.config.all_tables() {
        let Some(src) = project.source(&spec.source).ok().and_then(|s| s.as_files()) else {
            continue;
        };
        let what = format!("source {} ({})", spec.source, src.url);
        let url = project.config.resolve_path(&src.url);
        out.push(
            match FilesSource::new(
                &spec.source,
                &spec.table,
                src,
                &url,
                &project.store_options(),
            ) {
                Ok(s) => match s.list().await {
                    Ok(files) => Check {
                        what,
                        ok: true,
                        detail: format!("{} file(s) found", files.len()),
                    },
                    Err(e) => Check {
                        what,
                        ok: false,
                        detail: e.to_string(),
                    },
                },
                Err(e) => Check {
                    what,
                    ok: false,
                    detail: e.to_string(),
                },
            },
        );
    }
    for (name, src) in &project.config.sources {
        if let Some(src) = src.as_mysql() {
            let (ok, detail) = match crate::mysql::check_source(project, name, src).await {
                Ok(d) => (true, d),
                Err(e) => (false, e.to_string()),
            };
            out.push(Check {
                what: format!("source {name} (mysql)"),
                ok,
                detail,
            });
        }
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
    out
}
