//! Finding the rows that differ between a source table and its warehouse table without moving
//! them: checksums of key ranges computed inside each database, ranges that differ cut smaller
//! until they are small enough to compare row hashes, then differing keys checked again after
//! the pipeline has had time to carry what was in flight.

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;

use sluice_core::canon::{Key, KeyRange, Side};
use sluice_sources::source::SharedSource;
use sluice_warehouses::{Warehouse, WarehouseError};

use crate::EngineError;

/// How a comparison cuts the tables.
#[derive(Debug, Clone, Copy)]
pub struct Cuts {
    /// Rows per segment of the first pass.
    pub segment_rows: u64,
    /// A range this small (on both sides) is compared row by row.
    pub leaf_rows: u64,
    /// Parts a differing range is cut into.
    pub fanout: u64,
    /// Hash buckets a table without a key is compared in.
    pub buckets: u64,
}

impl Default for Cuts {
    fn default() -> Self {
        Cuts {
            segment_rows: 100_000,
            leaf_rows: 2_000,
            fanout: 16,
            buckets: 1024,
        }
    }
}

/// Keys per query when rows are asked for by key.
const KEYS_PER_QUERY: usize = 500;

/// Opens the warehouse.
pub(crate) type Opener<'a> = Box<dyn Fn() -> Result<Box<dyn Warehouse>, EngineError> + 'a>;

/// The two tables being compared, each with its side of the canonical row.
pub(crate) struct Pair<'a> {
    pub source: SharedSource,
    pub src: Side,
    pub wh: Side,
    /// The warehouse connection: opened when a query needs it, closed while the comparison
    /// waits (an embedded DuckDB has one writer, and a pipeline loading it must not wait on
    /// us), and taken out while a blocking query runs on it.
    pub warehouse: Option<Box<dyn Warehouse>>,
    pub open: Opener<'a>,
}

/// What differs, by key.
#[derive(Debug, Default, Clone)]
pub struct Differences {
    /// At the source, not in the warehouse.
    pub missing: Vec<Key>,
    /// In the warehouse, not at the source.
    pub extra: Vec<Key>,
    /// In both, with different values.
    pub different: Vec<Key>,
}

impl Differences {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }

    pub fn len(&self) -> usize {
        self.missing.len() + self.extra.len() + self.different.len()
    }

    fn keys(&self) -> Vec<Key> {
        let mut k = self.missing.clone();
        k.extend(self.extra.iter().cloned());
        k.extend(self.different.iter().cloned());
        k
    }

    /// Sorts each list (reports and tests read them in key order).
    fn sorted(mut self) -> Self {
        self.missing.sort();
        self.extra.sort();
        self.different.sort();
        self
    }

    /// Classifies keys by their row hashes on each side.
    fn of(src: &HashMap<Key, String>, wh: &HashMap<Key, String>) -> Differences {
        let mut d = Differences::default();
        for (k, h) in src {
            match wh.get(k) {
                None => d.missing.push(k.clone()),
                Some(w) if w != h => d.different.push(k.clone()),
                Some(_) => {}
            }
        }
        d.extra = wh
            .keys()
            .filter(|k| !src.contains_key(*k))
            .cloned()
            .collect();
        d.sorted()
    }
}

/// Counts of a comparison's work.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Work {
    pub source_rows: u64,
    pub warehouse_rows: u64,
    /// Key ranges whose checksums were computed (on both sides).
    pub ranges: u64,
    /// Row hashes read from the two sides (rows themselves never leave either).
    pub hashes_read: u64,
    /// Differences that agreed when checked again: changes that were still in flight.
    pub in_flight: u64,
}

/// One segment's rows and checksum on each side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sum {
    rows: u64,
    hash_sum: i128,
}

impl Pair<'_> {
    /// The warehouse connection, opened if it is not.
    fn connection(&mut self) -> Result<Box<dyn Warehouse>, EngineError> {
        match self.warehouse.take() {
            Some(wh) => Ok(wh),
            None => (self.open)(),
        }
    }

    /// Closes the warehouse connection (the next query opens it again).
    pub fn release(&mut self) {
        self.warehouse = None;
    }

    /// Runs `src_sql` at the source and `wh_sql` in the warehouse at once; rows as text.
    async fn both(
        &mut self,
        src_sql: String,
        wh_sql: String,
    ) -> Result<(Texts, Texts), EngineError> {
        let wh = self.connection()?;
        let source = self.source.query_text(&src_sql);
        let (src, warehouse) = tokio::join!(source, on_warehouse(wh, wh_sql));
        let (wh, wh_rows) = warehouse?;
        self.warehouse = Some(wh);
        Ok((src?, wh_rows?))
    }

    /// A query on one side only.
    async fn one(&mut self, on_source: bool, sql: String) -> Result<Texts, EngineError> {
        if on_source {
            return Ok(self.source.query_text(&sql).await?);
        }
        let (wh, rows) = on_warehouse(self.connection()?, sql).await?;
        self.warehouse = Some(wh);
        Ok(rows?)
    }

    /// Each segment of `range` cut at `splits`, on both sides.
    async fn sums(
        &mut self,
        range: &KeyRange,
        splits: &[Key],
    ) -> Result<Vec<(Sum, Sum)>, EngineError> {
        let (s, w) = self
            .both(
                self.src.sums_sql(range, splits),
                self.wh.sums_sql(range, splits),
            )
            .await?;
        let mut out = vec![(Sum::default(), Sum::default()); splits.len() + 1];
        for (rows, left) in [(s, true), (w, false)] {
            for r in rows {
                let seg: usize = number(&r, 0)?;
                let sum = Sum {
                    rows: number(&r, 1)?,
                    hash_sum: number(&r, 2)?,
                };
                let slot = out.get_mut(seg).ok_or_else(|| {
                    EngineError::Internal(format!("checksum query gave segment {seg}"))
                })?;
                match left {
                    true => slot.0 = sum,
                    false => slot.1 = sum,
                }
            }
        }
        Ok(out)
    }

    /// Where to cut `range` into parts of about `every` rows, from one side's keys: each
    /// cut `every` rows past the one before.
    async fn splits(
        &mut self,
        on_source: bool,
        range: &KeyRange,
        every: u64,
    ) -> Result<Vec<Key>, EngineError> {
        let mut cuts: Vec<Key> = Vec::new();
        loop {
            let side = if on_source { &self.src } else { &self.wh };
            let sql = side.cut_sql(range, cuts.last(), every.max(1));
            let Some(row) = self.one(on_source, sql).await?.into_iter().next() else {
                return Ok(cuts);
            };
            cuts.push(key(&row, row.len())?);
        }
    }

    /// The row hashes of `range` on both sides, by key.
    async fn hashes(&mut self, range: &KeyRange) -> Result<(Hashes, Hashes), EngineError> {
        let (s, w) = self
            .both(self.src.hashes_sql(range), self.wh.hashes_sql(range))
            .await?;
        Ok((by_key(s)?, by_key(w)?))
    }

    /// The row hashes of `keys` on both sides.
    async fn hashes_of(&mut self, keys: &[Key]) -> Result<(Hashes, Hashes), EngineError> {
        let (mut src, mut wh) = (HashMap::new(), HashMap::new());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let (s, w) = self
                .both(
                    self.src.hashes_of_keys_sql(chunk),
                    self.wh.hashes_of_keys_sql(chunk),
                )
                .await?;
            src.extend(by_key(s)?);
            wh.extend(by_key(w)?);
        }
        Ok((src, wh))
    }

    /// Compares the two tables by key: the keys that differ (the work counted in `work`).
    pub async fn compare(
        &mut self,
        cuts: Cuts,
        work: &mut Work,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Differences, EngineError> {
        let whole = KeyRange::default();
        let splits = self.splits(true, &whole, cuts.segment_rows).await?;
        let mut pending = Vec::new();
        let sums = self.sums(&whole, &splits).await?;
        work.ranges += sums.len() as u64;
        for (s, w) in &sums {
            work.source_rows += s.rows;
            work.warehouse_rows += w.rows;
        }
        progress(&format!(
            "{} segment(s): {} row(s) at the source, {} in the warehouse",
            sums.len(),
            work.source_rows,
            work.warehouse_rows
        ));
        collect_differing(&whole, &splits, sums, &mut pending);
        if !pending.is_empty() {
            progress(&format!("{} segment(s) differ: narrowing", pending.len()));
        }
        let (mut src, mut wh) = (HashMap::new(), HashMap::new());
        while let Some((range, s, w)) = pending.pop() {
            let most = s.rows.max(w.rows);
            if most <= cuts.leaf_rows.max(cuts.fanout) {
                let (a, b) = self.hashes(&range).await?;
                work.hashes_read += (a.len() + b.len()) as u64;
                src.extend(a);
                wh.extend(b);
                continue;
            }
            let every = most.div_ceil(cuts.fanout);
            let splits = self.splits(s.rows >= w.rows, &range, every).await?;
            let sums = self.sums(&range, &splits).await?;
            work.ranges += sums.len() as u64;
            collect_differing(&range, &splits, sums, &mut pending);
        }
        Ok(Differences::of(&src, &wh))
    }

    /// Compares a table without a key as a multiset of rows: bucket checksums of the row
    /// hashes, then, in the buckets that differ, each distinct row's count on both sides. A
    /// row the source holds more often is `missing` (once per copy), one the warehouse holds
    /// more often is `extra`; each named by its canonical text.
    pub async fn compare_rows(
        &mut self,
        buckets: u64,
        work: &mut Work,
    ) -> Result<Differences, EngineError> {
        let (s, w) = self
            .both(
                self.src.bucket_sums_sql(buckets),
                self.wh.bucket_sums_sql(buckets),
            )
            .await?;
        let sums = |rows: Texts| -> Result<HashMap<u64, Sum>, EngineError> {
            rows.iter()
                .map(|r| {
                    Ok((
                        number(r, 0)?,
                        Sum {
                            rows: number(r, 1)?,
                            hash_sum: number(r, 2)?,
                        },
                    ))
                })
                .collect()
        };
        let (s, w) = (sums(s)?, sums(w)?);
        work.source_rows = s.values().map(|x| x.rows).sum();
        work.warehouse_rows = w.values().map(|x| x.rows).sum();
        work.ranges += buckets;
        let mut differing: Vec<u64> = (0..buckets).filter(|b| s.get(b) != w.get(b)).collect();
        differing.sort_unstable();
        let mut found = Differences::default();
        if differing.is_empty() {
            return Ok(found);
        }
        let (s, w) = self
            .both(
                self.src.bucket_rows_sql(buckets, &differing),
                self.wh.bucket_rows_sql(buckets, &differing),
            )
            .await?;
        work.hashes_read += (s.len() + w.len()) as u64;
        let counted = |rows: Texts| -> Result<HashMap<String, (u64, String)>, EngineError> {
            rows.into_iter()
                .map(|r| {
                    let h = r[0].clone().unwrap_or_default();
                    let text = r[2].clone().unwrap_or_default();
                    Ok((h, (number(&r, 1)?, sluice_core::canon::readable(&text))))
                })
                .collect()
        };
        let (s, w) = (counted(s)?, counted(w)?);
        for (h, (n, text)) in &s {
            let there = w.get(h).map_or(0, |(m, _)| *m);
            for _ in there..*n {
                found.missing.push(vec![text.clone()]);
            }
        }
        for (h, (n, text)) in &w {
            let here = s.get(h).map_or(0, |(m, _)| *m);
            for _ in here..*n {
                found.extra.push(vec![text.clone()]);
            }
        }
        Ok(found.sorted())
    }

    /// Checks differences again, `rounds` times `settle` apart, until they agree: one that
    /// agrees later was a change still on its way through the pipeline. Keys are checked by
    /// key; a table without a key is compared again in its buckets.
    pub async fn recheck(
        &mut self,
        mut found: Differences,
        (rounds, settle): (u32, Duration),
        cuts: Cuts,
        work: &mut Work,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Differences, EngineError> {
        for round in 1..=rounds {
            if found.is_empty() {
                break;
            }
            progress(&format!(
                "{} difference(s): checking again in {} s (round {round} of {rounds})",
                found.len(),
                settle.as_secs_f64()
            ));
            self.release();
            tokio::time::sleep(settle).await;
            let before = found.len();
            found = match self.src.key.is_empty() {
                false => self.now(&found.keys()).await?,
                true => {
                    let mut again = Work::default();
                    let found = self.compare_rows(cuts.buckets, &mut again).await?;
                    work.ranges += again.ranges;
                    work.hashes_read += again.hashes_read;
                    found
                }
            };
            work.in_flight += before.saturating_sub(found.len()) as u64;
        }
        Ok(found)
    }

    /// How `keys` compare now.
    pub async fn now(&mut self, keys: &[Key]) -> Result<Differences, EngineError> {
        let (src, wh) = self.hashes_of(keys).await?;
        Ok(Differences::of(&src, &wh))
    }
}

type Texts = Vec<Vec<Option<String>>>;

/// Runs `sql` on a warehouse connection off the async threads (its calls block), handing the
/// connection back with the rows as text.
async fn on_warehouse(
    mut wh: Box<dyn Warehouse>,
    sql: String,
) -> Result<(Box<dyn Warehouse>, Result<Texts, WarehouseError>), EngineError> {
    tokio::task::spawn_blocking(move || {
        let rows = wh.query(&sql).map(|b| texts(&b));
        (wh, rows)
    })
    .await
    .map_err(|e| EngineError::Internal(format!("warehouse query: {e}")))
}
type Hashes = HashMap<Key, String>;

/// The segments whose sides differ, as ranges with their counts.
fn collect_differing(
    range: &KeyRange,
    splits: &[Key],
    sums: Vec<(Sum, Sum)>,
    into: &mut Vec<(KeyRange, Sum, Sum)>,
) {
    for (i, (s, w)) in sums.into_iter().enumerate() {
        if s == w {
            continue;
        }
        let lo = match i {
            0 => range.lo.clone(),
            i => Some(splits[i - 1].clone()),
        };
        let hi = match splits.get(i) {
            Some(k) => Some(k.clone()),
            None => range.hi.clone(),
        };
        into.push((KeyRange { lo, hi }, s, w));
    }
}

/// Rows of `key…, hash` by key.
fn by_key(rows: Texts) -> Result<Hashes, EngineError> {
    rows.into_iter()
        .map(|r| {
            let n = r.len() - 1;
            let h = r[n]
                .clone()
                .ok_or_else(|| EngineError::Internal("a row hash is NULL".into()))?;
            Ok((key(&r, n)?, h))
        })
        .collect()
}

/// The first `n` values of a row as a key.
fn key(row: &[Option<String>], n: usize) -> Result<Key, EngineError> {
    row[..n]
        .iter()
        .map(|v| {
            v.clone()
                .ok_or_else(|| EngineError::Internal("a key value is NULL".into()))
        })
        .collect()
}

/// Value `i` of a row as a number (a SUM over no rows is NULL: 0).
fn number<T: std::str::FromStr + Default>(
    row: &[Option<String>],
    i: usize,
) -> Result<T, EngineError> {
    match row.get(i).cloned().flatten() {
        None => Ok(T::default()),
        Some(t) => t
            .trim()
            .parse()
            .map_err(|_| EngineError::Internal(format!("checksum query gave `{t}`, not a number"))),
    }
}

/// Every value of `batches` as text.
fn texts(batches: &[RecordBatch]) -> Texts {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let c = c.as_ref()?;
                        let s = c.as_string::<i32>();
                        (!s.is_null(r)).then(|| s.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> Key {
        vec![v.to_string()]
    }

    #[test]
    fn differences_are_classified_by_side_and_hash() {
        let src: Hashes = [
            (k("1"), "a".into()),
            (k("2"), "b".into()),
            (k("3"), "c".into()),
        ]
        .into_iter()
        .collect();
        let wh: Hashes = [
            (k("2"), "b".into()),
            (k("3"), "x".into()),
            (k("4"), "d".into()),
        ]
        .into_iter()
        .collect();
        let d = Differences::of(&src, &wh);
        assert_eq!(d.missing, vec![k("1")]);
        assert_eq!(d.different, vec![k("3")]);
        assert_eq!(d.extra, vec![k("4")]);
    }

    #[test]
    fn only_differing_segments_are_narrowed_with_their_bounds() {
        let splits = vec![k("10"), k("20")];
        let same = Sum {
            rows: 5,
            hash_sum: 9,
        };
        let other = Sum {
            rows: 5,
            hash_sum: 8,
        };
        let mut into = Vec::new();
        collect_differing(
            &KeyRange::default(),
            &splits,
            vec![(same, same), (same, other), (other, same)],
            &mut into,
        );
        let ranges: Vec<KeyRange> = into.into_iter().map(|(r, ..)| r).collect();
        assert_eq!(
            ranges,
            vec![
                KeyRange {
                    lo: Some(k("10")),
                    hi: Some(k("20"))
                },
                KeyRange {
                    lo: Some(k("20")),
                    hi: None
                },
            ]
        );
    }
}
