//! Where a table's capture stands, kept in its change log as Delta application transactions,
//! so every position commits atomically with the rows it covers.
//!
//! | app id                             | version                                        |
//! |------------------------------------|------------------------------------------------|
//! | `{kind}.position.len`, `.0`, `.1`… | the stream position: its length in bytes, then its bytes eight at a time (big-endian words) |
//! | `{kind}.snapshot.run`              | id of the snapshot run started (ms since epoch) |
//! | `{kind}.snapshot.chunks`           | that run's number of chunks                    |
//! | `{kind}.snapshot.plan.len`, `.0`…  | that run's plan, as the source split it        |
//! | `{kind}.snapshot.chunk.<run>.<i>`  | chunk `i` of the run is in the lake; the version is where its reader's view stood ([`ChunkReader::read_at`], 1 when not asked) |
//! | `{kind}.snapshot.done`             | id of the last snapshot run completed          |
//! | `{kind}.cursor`                    | incremental: the cursor value committed        |
//! | `file:<id>`                        | units: the version of the unit landed          |
//!
//! Positions written before they were bytes (MySQL's `mysql.binlog`, `mysql.snapshot.lo`…)
//! are read through [`Source::legacy_position`] until the first commit writes them anew.
//!
//! [`ChunkReader::read_at`]: sluice_sources::source::ChunkReader::read_at

use std::collections::HashMap;

use sluice_lake::LakeTable;
use sluice_sources::source::{Position, SnapshotMarks, SnapshotPlan, Source};

use crate::EngineError;

/// The application ids of one source kind.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    kind: &'static str,
}

impl Ids {
    pub fn of(source: &dyn Source) -> Ids {
        Ids {
            kind: source.kind(),
        }
    }

    pub fn run(&self) -> String {
        format!("{}.snapshot.run", self.kind)
    }

    pub fn done(&self) -> String {
        format!("{}.snapshot.done", self.kind)
    }

    pub fn chunks(&self) -> String {
        format!("{}.snapshot.chunks", self.kind)
    }

    pub fn chunk(&self, run: i64, i: u64) -> String {
        format!("{}.snapshot.chunk.{run}.{i}", self.kind)
    }

    pub fn cursor(&self) -> String {
        format!("{}.cursor", self.kind)
    }

    fn position(&self) -> String {
        format!("{}.position", self.kind)
    }

    fn plan(&self) -> String {
        format!("{}.snapshot.plan", self.kind)
    }

    /// Where the rejects of the stream commit ending at `at` are recorded in the quarantine.
    pub fn stream_rejects(&self, at: &Position) -> String {
        format!("{}.position.{}", self.kind, hex(&at.0))
    }
}

/// The position of a unit (a file) in the change log.
pub(crate) fn unit_id(id: &str) -> String {
    format!("file:{id}")
}

/// `bytes` as the application transactions `{prefix}.len`, `{prefix}.0`, `{prefix}.1`…
fn words(prefix: &str, bytes: &[u8]) -> Vec<(String, i64)> {
    let mut out = vec![(format!("{prefix}.len"), bytes.len() as i64)];
    for (i, w) in bytes.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        out.push((format!("{prefix}.{i}"), i64::from_be_bytes(b)));
    }
    out
}

/// The bytes [`words`] kept under `prefix`, if any.
async fn read_words(log: &LakeTable, prefix: &str) -> Result<Option<Vec<u8>>, EngineError> {
    let Some(len) = log.app_version(&format!("{prefix}.len")).await? else {
        return Ok(None);
    };
    let len = usize::try_from(len).unwrap_or(0);
    let mut bytes = Vec::with_capacity(len.next_multiple_of(8));
    for i in 0..len.div_ceil(8) {
        let w = log
            .app_version(&format!("{prefix}.{i}"))
            .await?
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "{}: position {prefix} is missing word {i}",
                    log.path()
                ))
            })?;
        bytes.extend_from_slice(&w.to_be_bytes());
    }
    bytes.truncate(len);
    Ok(Some(bytes))
}

/// The application transactions that record stream position `p`.
pub(crate) fn position_apps(ids: &Ids, p: &Position) -> Vec<(String, i64)> {
    words(&ids.position(), &p.0)
}

/// The application transactions that record snapshot plan `plan`.
pub(crate) fn plan_apps(ids: &Ids, plan: &SnapshotPlan) -> Vec<(String, i64)> {
    let mut out = vec![(ids.chunks(), plan.chunks as i64)];
    out.extend(words(&ids.plan(), &plan.plan));
    out
}

/// The lake positions a source kept before positions were bytes.
async fn legacy(
    log: &LakeTable,
    source: &dyn Source,
) -> Result<HashMap<&'static str, i64>, EngineError> {
    let mut found = HashMap::new();
    for id in source.legacy_ids() {
        if let Some(v) = log.app_version(id).await? {
            found.insert(*id, v);
        }
    }
    Ok(found)
}

/// The table's committed stream position.
pub(crate) async fn stream_position(
    log: &LakeTable,
    source: &dyn Source,
) -> Result<Option<Position>, EngineError> {
    if let Some(b) = read_words(log, &Ids::of(source).position()).await? {
        return Ok(Some(Position(b)));
    }
    let old = legacy(log, source).await?;
    Ok(source.legacy_position(&|id| old.get(id).copied()))
}

/// The plan of the table's last snapshot run.
pub(crate) async fn snapshot_plan(
    log: &LakeTable,
    source: &dyn Source,
) -> Result<Option<SnapshotPlan>, EngineError> {
    let ids = Ids::of(source);
    if let Some(plan) = read_words(log, &ids.plan()).await? {
        let chunks = log.app_version(&ids.chunks()).await?.unwrap_or(1);
        return Ok(Some(SnapshotPlan {
            chunks: chunks.max(1) as u64,
            plan,
        }));
    }
    let old = legacy(log, source).await?;
    Ok(source.legacy_plan(&|id| old.get(id).copied()))
}

/// Where each chunk of the table's last completed snapshot run was read (what the stream
/// after it must not give again).
pub(crate) async fn snapshot_marks(
    log: &LakeTable,
    source: &dyn Source,
) -> Result<Option<SnapshotMarks>, EngineError> {
    let ids = Ids::of(source);
    let Some(run) = log.app_version(&ids.done()).await? else {
        return Ok(None);
    };
    let Some(plan) = snapshot_plan(log, source).await? else {
        return Ok(None);
    };
    // Every chunk's mark from one read of the log (not one per chunk).
    let marks = log.app_versions().await?;
    let read_at = (0..plan.chunks)
        .map(|i| marks.get(&ids.chunk(run, i)).copied().unwrap_or(1))
        .collect();
    Ok(Some(SnapshotMarks { plan, read_at }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of any length come back as they went in, the trailing word's padding dropped.
    #[test]
    fn words_keep_every_byte() {
        for len in [0usize, 1, 7, 8, 9, 16, 61] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 255) as u8).collect();
            let apps = words("k.position", &bytes);
            assert_eq!(apps[0], ("k.position.len".to_string(), len as i64));
            assert_eq!(apps.len(), 1 + len.div_ceil(8));
            let mut back: Vec<u8> = apps[1..]
                .iter()
                .flat_map(|(_, w)| w.to_be_bytes())
                .collect();
            back.truncate(len);
            assert_eq!(back, bytes, "length {len}");
        }
    }
}
