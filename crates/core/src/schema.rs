//! The schema catalog: how a lake table's source columns change over time, and the rules that
//! name each change's kind.
//!
//! The lake records what the source said, always (DESIGN.md, Land):
//!
//! - a column the lake lacks is added (nullable) — `new_column`;
//! - a column a source stopped sending stays, as NULLs from then on — `dropped_column`;
//! - a value whose type no longer fits its column lands in a variant column
//!   `<column>__<type>` (`price__text`) — `incompatible_type`, or `widened_type` when the new
//!   type holds every old value (int → bigint, decimal(10,2) → decimal(12,2)). Delta tables
//!   cannot change a column's physical type without the `typeWidening` feature, which
//!   delta-rs cannot write; so a wider value that still fits lands in place, and only one
//!   that does not goes to the variant.
//!
//! Each change makes a new [`SchemaVersion`] in the table's [`SchemaHistory`], which the lake
//! keeps in the same Delta metadata action as the schema itself (one commit, never apart).

use crate::types::MAX_DECIMAL_PRECISION;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

/// Separates a column's name from its variant's type (`price__text`).
pub const VARIANT_SEPARATOR: &str = "__";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    NewTable,
    NewColumn,
    DroppedColumn,
    WidenedType,
    IncompatibleType,
}

/// One change of a table's source columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    pub kind: ChangeKind,
    /// The source column (empty for `new_table`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub column: String,
    /// Its type before (type changes, drops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Its type now (new columns, type changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The variant column that holds values of the new type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl SchemaChange {
    /// The lake column a warehouse must add to take this change (None: nothing to add).
    pub fn added_column(&self) -> Option<&str> {
        match self.kind {
            ChangeKind::NewColumn => Some(&self.column),
            ChangeKind::WidenedType | ChangeKind::IncompatibleType => self.variant.as_deref(),
            ChangeKind::NewTable | ChangeKind::DroppedColumn => None,
        }
    }
}

impl std::fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        match self.kind {
            ChangeKind::NewTable => write!(f, "new table"),
            ChangeKind::NewColumn => write!(f, "new column {} {}", self.column, opt(&self.to)),
            ChangeKind::DroppedColumn => write!(
                f,
                "dropped column {} (kept in the lake as NULLs)",
                self.column
            ),
            ChangeKind::WidenedType | ChangeKind::IncompatibleType => write!(
                f,
                "{} {}: {} -> {} (values that do not fit go to {})",
                if self.kind == ChangeKind::WidenedType {
                    "widened type"
                } else {
                    "incompatible type"
                },
                self.column,
                opt(&self.from),
                opt(&self.to),
                opt(&self.variant)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    /// The source no longer sends it (the lake keeps it, NULL from then on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    /// The column it holds off-type values of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// 1, 2, ...
    pub version: u32,
    /// The lake (Delta) version that committed it.
    pub lake_version: i64,
    /// When it was committed (RFC 3339, UTC).
    pub at: String,
    /// The first `_sluice_seq` written under it.
    pub from_seq: i64,
    pub columns: Vec<CatalogColumn>,
    /// What changed from the previous version.
    pub changes: Vec<SchemaChange>,
}

/// A table's schema versions, oldest first (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaHistory {
    pub versions: Vec<SchemaVersion>,
}

impl SchemaHistory {
    /// The history of a new table: version 1, from its first columns.
    pub fn new(data: &Schema, lake_version: i64, at: String) -> SchemaHistory {
        SchemaHistory {
            versions: vec![SchemaVersion {
                version: 1,
                lake_version,
                at,
                from_seq: 1,
                columns: catalog_columns(data, &[]),
                changes: vec![SchemaChange {
                    kind: ChangeKind::NewTable,
                    column: String::new(),
                    from: None,
                    to: None,
                    variant: None,
                }],
            }],
        }
    }

    pub fn current(&self) -> &SchemaVersion {
        self.versions.last().expect("a history is never empty")
    }

    /// Columns the source no longer sends.
    pub fn dropped(&self) -> Vec<String> {
        self.current()
            .columns
            .iter()
            .filter(|c| c.dropped)
            .map(|c| c.name.clone())
            .collect()
    }

    /// Records `changes` as the next version, whose columns are `data` (the lake's source
    /// columns after them).
    pub fn record(
        &mut self,
        data: &Schema,
        changes: Vec<SchemaChange>,
        lake_version: i64,
        from_seq: i64,
        at: String,
    ) {
        let mut dropped = self.dropped();
        for c in &changes {
            match c.kind {
                ChangeKind::DroppedColumn => dropped.push(c.column.clone()),
                ChangeKind::NewColumn => dropped.retain(|d| d != &c.column),
                _ => {}
            }
        }
        let version = self.current().version + 1;
        self.versions.push(SchemaVersion {
            version,
            lake_version,
            at,
            from_seq,
            columns: catalog_columns(data, &dropped),
            changes,
        });
    }

    /// The versions after `version`, oldest first.
    pub fn since(&self, version: u32) -> impl Iterator<Item = &SchemaVersion> {
        self.versions.iter().filter(move |v| v.version > version)
    }
}

fn catalog_columns(data: &Schema, dropped: &[String]) -> Vec<CatalogColumn> {
    data.fields()
        .iter()
        .enumerate()
        .map(|(i, f)| CatalogColumn {
            name: f.name().clone(),
            data_type: type_name(f.data_type()),
            dropped: dropped.contains(f.name()),
            variant_of: variant_parent(data, i).map(|p| data.field(p).name().clone()),
        })
        .collect()
}

/// A type as users read it (`bigint`, `decimal(12,2)`, `timestamptz`).
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "utinyint".into(),
        DataType::UInt16 => "usmallint".into(),
        DataType::UInt32 => "uinteger".into(),
        DataType::UInt64 => "ubigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("list<{}>", type_name(f.data_type()))
        }
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map<{}, {}>",
                type_name(kv[0].data_type()),
                type_name(kv[1].data_type())
            ),
            other => other.to_string().to_ascii_lowercase(),
        },
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// The suffix of a variant column of type `t` (`text`, `bigint`, `decimal_12_2`).
pub fn variant_suffix(t: &DataType) -> String {
    type_name(t)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_end_matches('_')
        .to_string()
}

/// The variant column of `column` for values of type `t`.
pub fn variant_name(column: &str, t: &DataType) -> String {
    format!("{column}{VARIANT_SEPARATOR}{}", variant_suffix(t))
}

/// The column field `i` of `schema` is a variant of: its name is `<column>__<suffix of its
/// own type>` and `<column>` is in the schema.
pub fn variant_parent(schema: &Schema, i: usize) -> Option<usize> {
    let f = schema.field(i);
    let (base, suffix) = f.name().rsplit_once(VARIANT_SEPARATOR)?;
    if suffix != variant_suffix(f.data_type()) {
        return None;
    }
    schema.index_of(base).ok().filter(|&p| p != i)
}

/// For each column of `schema`, the indices of its variant columns (in schema order).
pub fn variants(schema: &Schema) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); schema.fields().len()];
    for i in 0..schema.fields().len() {
        if let Some(p) = variant_parent(schema, i) {
            out[p].push(i);
        }
    }
    out
}

fn int_digits(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    })
}

fn int_rank(t: &DataType) -> Option<(bool, u8)> {
    Some(match t {
        DataType::Int8 => (true, 8),
        DataType::Int16 => (true, 16),
        DataType::Int32 => (true, 32),
        DataType::Int64 => (true, 64),
        DataType::UInt8 => (false, 8),
        DataType::UInt16 => (false, 16),
        DataType::UInt32 => (false, 32),
        DataType::UInt64 => (false, 64),
        _ => return None,
    })
}

pub(crate) fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether a column of type `column` holds every value of type `value` exactly.
pub fn holds(column: &DataType, value: &DataType) -> bool {
    if column == value {
        return true;
    }
    match (column, value) {
        (c, v) if is_text(c) => {
            is_text(v) || !matches!(v, DataType::Binary | DataType::LargeBinary)
        }
        (c, v) if int_rank(c).is_some() && int_rank(v).is_some() => {
            let ((cs, cb), (vs, vb)) = (int_rank(c).unwrap(), int_rank(v).unwrap());
            match (cs, vs) {
                (true, true) | (false, false) => cb >= vb,
                (true, false) => cb > vb,
                (false, true) => false,
            }
        }
        (DataType::Float64, v) => matches!(
            v,
            DataType::Float16
                | DataType::Float32
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
        ),
        (DataType::Float32, v) => matches!(
            v,
            DataType::Float16
                | DataType::Int8
                | DataType::Int16
                | DataType::UInt8
                | DataType::UInt16
        ),
        (DataType::Decimal128(p, s), DataType::Decimal128(vp, vs)) => {
            vs <= s && (*vp as i16 - *vs as i16) <= (*p as i16 - *s as i16)
        }
        (DataType::Decimal128(p, s), v) => {
            int_digits(v).is_some_and(|d| d as i16 <= *p as i16 - *s as i16)
        }
        (DataType::Timestamp(cu, ctz), DataType::Timestamp(vu, vtz)) => {
            ctz.is_some() == vtz.is_some() && unit_rank(cu) >= unit_rank(vu)
        }
        (DataType::Binary | DataType::LargeBinary, v) => {
            matches!(v, DataType::Binary | DataType::LargeBinary)
        }
        _ => false,
    }
}

fn unit_rank(u: &TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

/// The narrowest type other than text that holds every value of both `a` and `b` (a bigint
/// and a decimal(12,2) meet in decimal(21,2), a date and a timestamp in the timestamp); None
/// when only text holds both. Two text types meet in text.
pub fn common_type(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b || (is_text(a) && is_text(b)) {
        return Some(a.clone());
    }
    if is_text(a) || is_text(b) {
        return None;
    }
    if holds(a, b) {
        return Some(a.clone());
    }
    if holds(b, a) {
        return Some(b.clone());
    }
    let decimal = |int: i16, scale: i8| {
        let p = int + scale as i16;
        (p <= MAX_DECIMAL_PRECISION as i16).then_some(DataType::Decimal128(p as u8, scale))
    };
    match (a, b) {
        (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => decimal(
            (*p1 as i16 - *s1 as i16).max(*p2 as i16 - *s2 as i16),
            (*s1).max(*s2),
        ),
        (DataType::Decimal128(p, s), v) | (v, DataType::Decimal128(p, s)) => {
            let d = int_digits(v)?;
            decimal((*p as i16 - *s as i16).max(d as i16), *s)
        }
        (DataType::Date32, t @ DataType::Timestamp(_, None))
        | (t @ DataType::Timestamp(_, None), DataType::Date32) => Some(t.clone()),
        (a, b) if int_rank(a).is_some() && int_rank(b).is_some() => {
            // Signed meets unsigned: the signed type twice the unsigned width, up to 64 bits.
            let width = int_rank(a).unwrap().1.max(int_rank(b).unwrap().1);
            match width {
                8 => Some(DataType::Int16),
                16 => Some(DataType::Int32),
                32 => Some(DataType::Int64),
                _ => decimal(20, 0),
            }
        }
        _ => None,
    }
}

/// Whether `new` is a widening of `old` that loses nothing (a number to a wider number): a
/// `widened_type` change rather than an `incompatible_type` one. Text is never a widening.
pub fn widens(old: &DataType, new: &DataType) -> bool {
    !is_text(new) && holds(new, old)
}

/// What the lake must add to take in a file (or source table) whose columns are `incoming`.
#[derive(Debug, Default, PartialEq)]
pub struct Reconciled {
    /// Columns to append to the lake's schema (all nullable).
    pub add: Vec<Field>,
    pub changes: Vec<SchemaChange>,
}

/// Holds `incoming` columns against the lake's source columns `lake`. `complete` says the
/// incoming columns are all the source has (a CSV header, a Parquet schema): lake columns
/// missing from it were dropped. JSON records omit keys freely, so they are never complete.
pub fn reconcile(
    lake: &Schema,
    dropped: &[String],
    incoming: &Schema,
    complete: bool,
) -> Reconciled {
    let mut out = Reconciled::default();
    let variants = variants(lake);
    for f in incoming.fields() {
        let Ok(i) = lake.index_of(f.name()) else {
            out.changes.push(SchemaChange {
                kind: ChangeKind::NewColumn,
                column: f.name().clone(),
                from: None,
                to: Some(type_name(f.data_type())),
                variant: None,
            });
            out.add.push(match crate::types::is_json(f) {
                true => crate::types::json_field(f.name()),
                false => Field::new(f.name(), f.data_type().clone(), true),
            });
            continue;
        };
        if dropped.contains(f.name()) {
            out.changes.push(SchemaChange {
                kind: ChangeKind::NewColumn,
                column: f.name().clone(),
                from: None,
                to: Some(type_name(lake.field(i).data_type())),
                variant: None,
            });
        }
        let have = lake.field(i).data_type();
        let (new, variant_fits) = (f.data_type(), |j: &usize| {
            holds(lake.field(*j).data_type(), f.data_type())
        });
        if holds(have, new) || variants[i].iter().any(variant_fits) {
            continue;
        }
        let variant = variant_name(f.name(), new);
        if lake.index_of(&variant).is_ok() || out.add.iter().any(|a| a.name() == &variant) {
            continue;
        }
        out.changes.push(SchemaChange {
            kind: if widens(have, new) {
                ChangeKind::WidenedType
            } else {
                ChangeKind::IncompatibleType
            },
            column: f.name().clone(),
            from: Some(type_name(have)),
            to: Some(type_name(new)),
            variant: Some(variant.clone()),
        });
        out.add.push(Field::new(variant, new.clone(), true));
    }
    if complete {
        for (i, f) in lake.fields().iter().enumerate() {
            if variant_parent(lake, i).is_none()
                && !dropped.contains(f.name())
                && incoming.index_of(f.name()).is_err()
            {
                out.changes.push(SchemaChange {
                    kind: ChangeKind::DroppedColumn,
                    column: f.name().clone(),
                    from: Some(type_name(f.data_type())),
                    to: None,
                    variant: None,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_types_meet_without_text_where_they_can() {
        use DataType::*;
        assert_eq!(common_type(&Int32, &Int64), Some(Int64));
        assert_eq!(
            common_type(&Int64, &Decimal128(12, 2)),
            Some(Decimal128(21, 2))
        );
        assert_eq!(
            common_type(&Decimal128(10, 4), &Decimal128(12, 2)),
            Some(Decimal128(14, 4))
        );
        assert_eq!(
            common_type(&Date32, &Timestamp(TimeUnit::Microsecond, None)),
            Some(Timestamp(TimeUnit::Microsecond, None))
        );
        assert_eq!(common_type(&UInt32, &Int32), Some(Int64));
        assert_eq!(common_type(&Utf8, &Utf8), Some(Utf8));
        assert_eq!(common_type(&Int64, &Utf8), None);
        assert_eq!(common_type(&Boolean, &Date32), None);
        assert_eq!(common_type(&Decimal128(38, 25), &Int64), None);
    }

    fn schema(cols: &[(&str, DataType)]) -> Schema {
        Schema::new(
            cols.iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn each_kind_of_change_is_named() {
        let lake = schema(&[
            ("id", DataType::Int64),
            ("qty", DataType::Int32),
            ("price", DataType::Decimal128(10, 2)),
            ("gone", DataType::Utf8),
        ]);
        let incoming = schema(&[
            ("id", DataType::Utf8),
            ("qty", DataType::Int64),
            ("price", DataType::Decimal128(12, 2)),
            ("note", DataType::Utf8),
        ]);
        let r = reconcile(&lake, &[], &incoming, true);
        let kinds: Vec<(ChangeKind, &str, Option<&str>)> = r
            .changes
            .iter()
            .map(|c| (c.kind, c.column.as_str(), c.variant.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::IncompatibleType, "id", Some("id__text")),
                (ChangeKind::WidenedType, "qty", Some("qty__bigint")),
                (
                    ChangeKind::WidenedType,
                    "price",
                    Some("price__decimal_12_2")
                ),
                (ChangeKind::NewColumn, "note", None),
                (ChangeKind::DroppedColumn, "gone", None),
            ]
        );
        let added: Vec<&str> = r.add.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            added,
            vec!["id__text", "qty__bigint", "price__decimal_12_2", "note"]
        );

        // Once the variants exist, the same file changes nothing; a narrower one neither.
        let mut grown: Vec<Field> = lake.fields().iter().map(|f| f.as_ref().clone()).collect();
        grown.extend(r.add.clone());
        let grown = Schema::new(grown);
        assert!(reconcile(&grown, &["gone".into()], &incoming, true)
            .changes
            .is_empty());
        let narrow = schema(&[
            ("id", DataType::Int32),
            ("price", DataType::Decimal128(8, 1)),
        ]);
        assert!(reconcile(&grown, &["gone".into()], &narrow, false)
            .changes
            .is_empty());
        // A dropped column that comes back is new again.
        let back = reconcile(
            &grown,
            &["gone".into()],
            &schema(&[("gone", DataType::Utf8)]),
            false,
        );
        assert_eq!(back.changes[0].kind, ChangeKind::NewColumn);
        assert!(back.add.is_empty());
    }

    #[test]
    fn variants_are_found_by_name_and_type() {
        let s = schema(&[
            ("price", DataType::Int64),
            ("price__text", DataType::Utf8),
            ("a__b", DataType::Utf8),
            ("x__text", DataType::Int64),
        ]);
        assert_eq!(variants(&s), vec![vec![1], vec![], vec![], vec![]]);
        assert_eq!(
            variant_name("p", &DataType::Decimal128(38, 9)),
            "p__decimal_38_9"
        );
    }

    #[test]
    fn holds_and_widens() {
        use DataType::*;
        assert!(holds(&Int64, &Int32) && !holds(&Int32, &Int64));
        assert!(holds(&Decimal128(12, 2), &Decimal128(10, 2)));
        assert!(!holds(&Decimal128(12, 2), &Decimal128(12, 3)));
        assert!(holds(&Decimal128(20, 1), &Int64) && !holds(&Decimal128(18, 0), &Int64));
        assert!(!holds(&Float64, &Int64), "beyond 2^53 a double rounds");
        assert!(holds(&Utf8, &Int64) && !widens(&Int64, &Utf8));
        assert!(widens(&Int32, &Int64) && !widens(&Int64, &Float64));
    }

    #[test]
    fn history_tracks_drops_and_returns() {
        let v1 = schema(&[("a", DataType::Int64), ("b", DataType::Utf8)]);
        let mut h = SchemaHistory::new(&v1, 0, "t0".into());
        let drop_b = reconcile(&v1, &h.dropped(), &schema(&[("a", DataType::Int64)]), true);
        h.record(&v1, drop_b.changes, 3, 11, "t1".into());
        assert_eq!(h.dropped(), vec!["b".to_string()]);
        assert_eq!(h.current().version, 2);
        let back = reconcile(&v1, &h.dropped(), &v1, true);
        h.record(&v1, back.changes, 5, 21, "t2".into());
        assert!(h.dropped().is_empty());
        assert_eq!(
            h.since(1).map(|v| v.from_seq).collect::<Vec<_>>(),
            vec![11, 21]
        );
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<SchemaHistory>(&json).unwrap(), h);
    }
}
