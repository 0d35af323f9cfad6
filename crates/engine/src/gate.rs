//! The schema gate, between lake and warehouse (DESIGN.md, Gate).
//!
//! The lake takes every schema change (its catalog, `sluice_core::schema`, records each as a
//! version). Each warehouse table has decided the catalog up to some version; the versions
//! after it are its pending changes, and each is decided by the table's policy for its kind:
//!
//! - `evolve`: the load carries the new column (or variant column) and the warehouse adds it;
//! - `freeze`: the load keeps the warehouse table's columns; what is left out is counted;
//! - `halt`: loading stops just before the first change of that version (its `from_seq`), so
//!   everything before it still loads; `sluice schema accept` decides the rest as evolve.
//!
//! What a table has decided is kept beside the lake table
//! (`_sluice_gate/<warehouse>/<schema>.<table>.json`): it is only ever a version number, and
//! losing it costs a re-decision, never data (the ledger alone says what loaded).

use std::collections::BTreeSet;

use arrow::datatypes::Schema;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use sluice_core::config::{SchemaPolicies, SchemaPolicy};
use sluice_core::schema::{ChangeKind, SchemaChange, SchemaHistory};
use sluice_lake::LakeTable;
use sluice_warehouses::Target;

use crate::EngineError;

/// What a warehouse table has decided of its lake table's catalog.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct GateState {
    /// Catalog versions up to this one are decided (evolved, frozen or accepted).
    pub decided_version: u32,
}

fn state_path(warehouse: &str, target: &Target) -> object_store::path::Path {
    object_store::path::Path::from(format!(
        "_sluice_gate/{warehouse}/{}.{}.json",
        target.schema, target.table
    ))
}

pub async fn read_state(
    log: &LakeTable,
    warehouse: &str,
    target: &Target,
) -> Result<Option<GateState>, EngineError> {
    read_beside(log, &state_path(warehouse, target), "gate state").await
}

pub async fn write_state(
    log: &LakeTable,
    warehouse: &str,
    target: &Target,
    state: GateState,
) -> Result<(), EngineError> {
    write_beside(log, &state_path(warehouse, target), "gate state", &state).await
}

/// A small JSON state file kept beside a lake table (`what` names it in errors; None: absent).
pub(crate) async fn read_beside<T: serde::de::DeserializeOwned>(
    log: &LakeTable,
    path: &object_store::path::Path,
    what: &str,
) -> Result<Option<T>, EngineError> {
    match log.store().get(path).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| EngineError::Internal(format!("reading {what}: {e}")))?;
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                EngineError::Internal(format!(
                    "{what} {path} of {} is unreadable: {e}",
                    log.path()
                ))
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(EngineError::Internal(format!("reading {what}: {e}"))),
    }
}

pub(crate) async fn write_beside<T: Serialize>(
    log: &LakeTable,
    path: &object_store::path::Path,
    what: &str,
    value: &T,
) -> Result<(), EngineError> {
    let body = serde_json::to_vec(value).expect("state serializes");
    log.store()
        .put(path, body.into())
        .await
        .map_err(|e| EngineError::Internal(format!("writing {what}: {e}")))?;
    Ok(())
}

/// One pending change and what the policy made of it.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub version: u32,
    pub from_seq: i64,
    pub change: SchemaChange,
    pub policy: SchemaPolicy,
}

/// The table is halted: changes from `at_seq` on wait for `sluice schema accept`.
#[derive(Debug, Clone, Serialize)]
pub struct Halt {
    pub version: u32,
    pub at_seq: i64,
}

/// What one load of one warehouse table may do.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The lake's source columns the load carries, in lake order.
    pub columns: Vec<String>,
    /// The load may create the table or add columns to it.
    pub add_columns: bool,
    pub halt: Option<Halt>,
    /// Columns frozen out of the warehouse table.
    pub left_out: Vec<String>,
    /// Every change after the decided version, with its policy.
    pub pending: Vec<Pending>,
    /// The catalog version decided once this load has applied.
    pub decided_version: u32,
}

impl Decision {
    /// The pending changes, one line each, for status and sync reports.
    pub fn diff(&self) -> String {
        self.pending
            .iter()
            .map(|p| {
                format!(
                    "v{} (from seq {}): {} [{}]",
                    p.version,
                    p.from_seq,
                    p.change,
                    p.policy.name()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Decides a load of a warehouse table whose columns are `existing` (warehouse names; empty:
/// no table yet). `lake` is the lake's source columns and `mapped` their warehouse names (same
/// order). `accept` decides every pending change as evolve (`sluice schema accept`).
pub fn decide(
    history: &SchemaHistory,
    lake: &Schema,
    mapped: &[String],
    existing: &[String],
    state: Option<GateState>,
    policies: &SchemaPolicies,
    accept: bool,
) -> Decision {
    let policy = |kind: ChangeKind| match accept {
        true => SchemaPolicy::Evolve,
        false => policies.of(kind),
    };
    let all: Vec<String> = lake.fields().iter().map(|f| f.name().clone()).collect();
    let current = history.current();
    if existing.is_empty() {
        let new_table = SchemaChange {
            kind: ChangeKind::NewTable,
            column: String::new(),
            from: None,
            to: None,
            variant: None,
        };
        let p = policy(ChangeKind::NewTable);
        let pending = vec![Pending {
            version: current.version,
            from_seq: 1,
            change: new_table,
            policy: p,
        }];
        return match p {
            SchemaPolicy::Evolve => Decision {
                columns: all,
                add_columns: true,
                halt: None,
                left_out: Vec::new(),
                pending: Vec::new(),
                decided_version: current.version,
            },
            SchemaPolicy::Halt => Decision {
                columns: Vec::new(),
                add_columns: false,
                halt: Some(Halt {
                    version: current.version,
                    at_seq: 1,
                }),
                left_out: Vec::new(),
                pending,
                decided_version: 0,
            },
            SchemaPolicy::Freeze => Decision {
                columns: Vec::new(),
                add_columns: false,
                halt: None,
                left_out: all,
                pending,
                decided_version: 0,
            },
        };
    }
    let decided = state.map(|s| s.decided_version).unwrap_or(1);
    let known: BTreeSet<&str> = all
        .iter()
        .zip(mapped)
        .filter(|(_, m)| existing.contains(m))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut evolved: BTreeSet<String> = BTreeSet::new();
    let mut pending = Vec::new();
    let mut halt = None;
    let mut decided_version = decided;
    for v in history.since(decided) {
        let mut adds = Vec::new();
        for c in &v.changes {
            let p = policy(c.kind);
            pending.push(Pending {
                version: v.version,
                from_seq: v.from_seq,
                change: c.clone(),
                policy: p,
            });
            match (p, c.added_column()) {
                (SchemaPolicy::Halt, _) if halt.is_none() => {
                    halt = Some(Halt {
                        version: v.version,
                        at_seq: v.from_seq,
                    })
                }
                (SchemaPolicy::Evolve, Some(col)) => adds.push(col.to_string()),
                _ => {}
            }
        }
        if halt.is_none() {
            evolved.extend(adds);
            decided_version = v.version;
        }
    }
    let columns: Vec<String> = all
        .iter()
        .filter(|n| known.contains(n.as_str()) || evolved.contains(*n))
        .cloned()
        .collect();
    // Left out: every lake column the table does not take, except those of changes still
    // undecided (behind a halt). Frozen columns stay out at every later load too.
    let undecided: BTreeSet<&str> = history
        .since(decided_version)
        .flat_map(|v| v.changes.iter().filter_map(|c| c.added_column()))
        .collect();
    let left_out = all
        .iter()
        .filter(|n| !columns.contains(n) && !undecided.contains(n.as_str()))
        .cloned()
        .collect();
    let add_columns = columns.iter().any(|c| !known.contains(c.as_str()));
    Decision {
        columns,
        add_columns,
        halt,
        left_out,
        pending,
        decided_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};
    use sluice_core::config::SchemaChangesSpec;
    use sluice_core::schema::reconcile;

    fn schema(cols: &[(&str, DataType)]) -> Schema {
        Schema::new(
            cols.iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    /// v1 (id, price) -> v2 new column note (from seq 11) -> v3 price gets text (from seq 21).
    fn history() -> (SchemaHistory, Schema) {
        let v1 = schema(&[("id", DataType::Int64), ("price", DataType::Int64)]);
        let mut h = SchemaHistory::new(&v1, 0, String::new());
        let r = reconcile(&v1, &[], &schema(&[("note", DataType::Utf8)]), false);
        let mut fields: Vec<Field> = v1.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(r.add);
        let v2 = Schema::new(fields.clone());
        h.record(&v2, r.changes, 2, 11, String::new());
        let r = reconcile(&v2, &[], &schema(&[("price", DataType::Utf8)]), false);
        fields.extend(r.add);
        let v3 = Schema::new(fields);
        h.record(&v3, r.changes, 4, 21, String::new());
        (h, v3)
    }

    fn names(s: &Schema) -> Vec<String> {
        s.fields().iter().map(|f| f.name().clone()).collect()
    }

    fn policies(spec: &str) -> SchemaPolicies {
        let spec: SchemaChangesSpec = toml::from_str::<toml::Value>(&format!("x = {spec}"))
            .unwrap()
            .get("x")
            .unwrap()
            .clone()
            .try_into()
            .unwrap();
        SchemaPolicies::default().with(Some(&spec))
    }

    #[test]
    fn each_policy_decides_the_pending_changes() {
        let (h, lake) = history();
        let mapped = names(&lake);
        let existing = vec!["id".to_string(), "price".to_string()];
        let state = Some(GateState { decided_version: 1 });

        let halt = decide(
            &h,
            &lake,
            &mapped,
            &existing,
            state,
            &policies("\"halt\""),
            false,
        );
        assert_eq!(halt.columns, vec!["id", "price"]);
        assert_eq!(
            halt.halt.as_ref().map(|h| (h.version, h.at_seq)),
            Some((2, 11))
        );
        assert_eq!(halt.decided_version, 1);
        assert_eq!(halt.pending.len(), 2);
        assert!(
            halt.diff().contains("new column note text [halt]"),
            "{}",
            halt.diff()
        );

        let evolve = decide(
            &h,
            &lake,
            &mapped,
            &existing,
            state,
            &policies("\"evolve\""),
            false,
        );
        assert_eq!(evolve.columns, vec!["id", "price", "note", "price__text"]);
        assert!(evolve.add_columns && evolve.halt.is_none());
        assert_eq!(evolve.decided_version, 3);

        let freeze = decide(
            &h,
            &lake,
            &mapped,
            &existing,
            state,
            &policies("\"freeze\""),
            false,
        );
        assert_eq!(freeze.columns, vec!["id", "price"]);
        assert_eq!(freeze.left_out, vec!["note", "price__text"]);
        assert!(!freeze.add_columns && freeze.halt.is_none());
        // Once decided, they stay left out (and counted) at every later load.
        let later = decide(
            &h,
            &lake,
            &mapped,
            &existing,
            Some(GateState { decided_version: 3 }),
            &policies("\"freeze\""),
            false,
        );
        assert!(later.pending.is_empty());
        assert_eq!(later.left_out, vec!["note", "price__text"]);

        // Per kind: the new column evolves, the incompatible type halts at its own version.
        let mixed = policies("{ new_column = \"evolve\", incompatible_type = \"halt\" }");
        let m = decide(&h, &lake, &mapped, &existing, state, &mixed, false);
        assert_eq!(m.columns, vec!["id", "price", "note"]);
        assert_eq!(m.halt.as_ref().map(|h| h.at_seq), Some(21));
        assert_eq!(m.decided_version, 2);

        // Accept evolves everything pending; a decided table has nothing pending.
        let a = decide(
            &h,
            &lake,
            &mapped,
            &existing,
            state,
            &policies("\"halt\""),
            true,
        );
        assert_eq!(a.columns.len(), 4);
        let done = decide(
            &h,
            &lake,
            &mapped,
            &names(&lake),
            Some(GateState { decided_version: 3 }),
            &policies("\"halt\""),
            false,
        );
        assert!(done.pending.is_empty() && done.halt.is_none() && !done.add_columns);
    }

    #[test]
    fn new_tables_are_created_unless_named() {
        let (h, lake) = history();
        let mapped = names(&lake);
        let d = decide(&h, &lake, &mapped, &[], None, &policies("\"halt\""), false);
        assert!(d.halt.is_none() && d.add_columns && d.columns.len() == 4);
        let d = decide(
            &h,
            &lake,
            &mapped,
            &[],
            None,
            &policies("{ new_table = \"halt\" }"),
            false,
        );
        assert_eq!(d.halt.map(|h| h.at_seq), Some(1));
    }
}
