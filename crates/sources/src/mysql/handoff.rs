//! The hand-off from a snapshot to the binlog: which changes a table's snapshot chunks
//! already saw.
//!
//! Each chunk of a snapshot run is read at its own binlog position (readers start apart, a
//! resumed run reads its remaining chunks later). A change committed at or before its key's
//! chunk position is already in the lake; one after it is not. Without this, CDC after a
//! resumed snapshot would land some changes twice, once as a read and once as the change:
//! merge absorbs that, append and history would not.

use std::collections::HashMap;

use mysql_async::binlog::value::BinlogValue;
use mysql_async::{Conn, Value};

use super::binlog::{BinlogPosition, Image, RowChange, RowOp};
use super::columns::ColumnDef;
use super::convert::{binlog_int, binlog_ordinal};
use super::plan::{self, ChunkPlan};
use super::MySql;
use crate::source::SnapshotMarks;
use crate::SourceError;

/// The chunk positions of a table's last snapshot run.
pub struct Watermarks {
    plan: ChunkPlan,
    /// The chunk column's index among the table's columns (None: the run was one chunk).
    column: Option<usize>,
    /// Encoded position per chunk.
    read_at: Vec<i64>,
    /// The latest of them: later changes are never in a chunk.
    pub last: i64,
    /// String keys: the sort keys of the plan's starts (weighed once) ...
    start_keys: Option<Vec<Vec<u8>>>,
    /// ... and the chunk of each key of the transaction being decided.
    chunk_of_key: HashMap<Vec<u8>, i64>,
}

impl Watermarks {
    /// The marks of a run, when some chunk was read after `resume` (else there is nothing
    /// to tell apart); `key` is the key's first column among `defs`.
    pub fn of(
        marks: &SnapshotMarks,
        plan: ChunkPlan,
        defs: &[ColumnDef],
        key: Option<&String>,
        resume: i64,
    ) -> Option<Watermarks> {
        let last = marks.read_at.iter().copied().max().unwrap_or(1);
        if last <= resume {
            return None;
        }
        let column = key
            .filter(|_| plan.is_split())
            .and_then(|k| defs.iter().position(|d| &d.name == k));
        Some(Watermarks {
            plan,
            column,
            read_at: marks.read_at.clone(),
            last,
            start_keys: None,
            chunk_of_key: HashMap::new(),
        })
    }

    /// Whether a change committed at `end` may be one a chunk saw.
    pub fn undecided(&self, end: &BinlogPosition) -> bool {
        end.encode() <= self.last
    }

    /// Whether deciding changes needs their keys weighed first (a string plan).
    pub fn weighs_keys(&self) -> bool {
        matches!(self.plan, ChunkPlan::Strings { .. }) && self.column.is_some()
    }

    /// Weighs the string keys of `changes` (committed at `end`) the next [`Self::unseen`]
    /// calls decide by, forgetting those of the transaction before. `names` gives the
    /// position of the key column in a change's images as the binlog wrote them.
    pub async fn weigh(
        &mut self,
        mysql: &MySql,
        conn: &mut Conn,
        changes: &[&RowChange],
        end: &BinlogPosition,
        defs: &[ColumnDef],
    ) -> Result<(), SourceError> {
        self.chunk_of_key.clear();
        let (Some(c), ChunkPlan::Strings { order, starts }) = (self.column, &self.plan) else {
            return Ok(());
        };
        if !self.undecided(end) {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for change in changes {
            let at = match change.names.is_empty() {
                true => Some(c),
                false => change.names.iter().position(|n| *n == defs[c].name),
            };
            for image in [&change.before, &change.after].into_iter().flatten() {
                if let Some(b) = at.and_then(|i| string_key(image, i)) {
                    keys.push(b.to_vec());
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        if self.start_keys.is_none() {
            self.start_keys = Some(plan::sort_keys(mysql, conn, order, starts).await?);
        }
        let start_keys = self.start_keys.as_ref().expect("weighed above");
        let sort_keys = plan::sort_keys(mysql, conn, order, &keys).await?;
        for (key, sort_key) in keys.into_iter().zip(sort_keys) {
            let chunk = start_keys.partition_point(|s| *s <= sort_key) as i64;
            self.chunk_of_key.insert(key, chunk);
        }
        Ok(())
    }

    /// The chunk holding `image`'s key (None: no key value, or a string key not weighed).
    fn chunk(&self, image: &Image, defs: &[ColumnDef]) -> Option<i64> {
        let Some(c) = self.column else {
            return Some(0);
        };
        match &self.plan {
            ChunkPlan::Ints(_) => self.plan.chunk_of_int(binlog_int(&defs[c], image.get(c)?)?),
            ChunkPlan::Ordinals { .. } => self
                .plan
                .chunk_of_ordinal(binlog_ordinal(&defs[c].kind(), image.get(c)?)?),
            ChunkPlan::Strings { .. } => {
                let chunk = self.chunk_of_key.get(string_key(image, c)?).copied();
                debug_assert!(chunk.is_some(), "a string key decided without its weight");
                chunk
            }
        }
    }

    /// Whether the chunk holding `image`'s key was read at or after `at`.
    fn seen(&self, image: &Image, at: i64, defs: &[ColumnDef]) -> bool {
        self.chunk(image, defs)
            .and_then(|chunk| self.read_at.get(chunk as usize))
            .is_some_and(|&r| at <= r)
    }

    /// The part of `change` (committed at `end`, its images in the order of `defs`) the
    /// snapshot did not see: all of it, none of it, or for an update that moved a key
    /// between chunks read on either side of it, the delete of the old key or the insert of
    /// the new.
    pub fn unseen(
        &self,
        change: RowChange,
        end: &BinlogPosition,
        defs: &[ColumnDef],
    ) -> Option<RowChange> {
        let at = end.encode();
        if at > self.last {
            return Some(change);
        }
        let before = change.before.as_ref().map(|i| self.seen(i, at, defs));
        let after = change.after.as_ref().map(|i| self.seen(i, at, defs));
        match (change.op, before, after) {
            (RowOp::Insert, _, Some(true)) | (RowOp::Delete, Some(true), _) => None,
            (RowOp::Update, Some(true), Some(true)) => None,
            (RowOp::Update, Some(true), Some(false)) => Some(RowChange {
                op: RowOp::Insert,
                before: None,
                ..change
            }),
            (RowOp::Update, Some(false), Some(true)) => Some(RowChange {
                op: RowOp::Delete,
                after: None,
                ..change
            }),
            _ => Some(change),
        }
    }
}

/// A string key's bytes (the column's character set) in a row image.
fn string_key(image: &Image, c: usize) -> Option<&[u8]> {
    match image.get(c)? {
        Some(BinlogValue::Value(Value::Bytes(b))) => Some(b.as_slice()),
        _ => None,
    }
}
