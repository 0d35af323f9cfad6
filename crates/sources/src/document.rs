//! Documents as rows, in one place for every source of documents (JSON files, MongoDB,
//! events): a
//! document's fields become columns, nested objects stay JSON text or, with
//! `nested = "flatten"`, become `parent__child` columns down to `max_depth` levels (deeper
//! objects and every array stay JSON text). Types are inferred over a sample, the union of
//! the fields seen, each column the narrowest type that holds every value
//! ([`Inference`]); a field whose documents disagree (a string in one, a number or an
//! object in another) is text.
//!
//! ```text
//!   document ──Node──► fields (name → Scalar) ──observe──► Inference per column ──► schema
//!                                │
//!                                └──texts──► RowBatcher (the one row builder)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::source::SourceTable;
use crate::values::Inference;

/// One field's value as a column receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    /// A JSON string, unescaped: its type is inferred from its text (dates, timestamps).
    Str(String),
    /// A JSON number or boolean, as written.
    Bare(String),
    /// An object or array, as JSON text.
    Nested(String),
    /// A value whose type the document says (BSON's Int64, Double, Date…), with its text as
    /// the row builder parses it.
    Typed(DataType, String),
}

impl Scalar {
    /// The text a column receives (None: NULL).
    pub fn text(&self) -> Option<&str> {
        match self {
            Scalar::Null => None,
            Scalar::Str(s) | Scalar::Bare(s) | Scalar::Nested(s) | Scalar::Typed(_, s) => {
                Some(s.as_str())
            }
        }
    }

    /// Adds this value to a column's inference.
    pub fn observe(&self, i: &mut Inference) {
        match self {
            Scalar::Null => i.observe_null(),
            Scalar::Str(s) => i.observe_json_string(s),
            Scalar::Bare(s) => i.observe_json_scalar(s),
            Scalar::Nested(_) => i.observe_nested(),
            Scalar::Typed(t, _) => i.observe_typed(t),
        }
    }
}

/// A value in a document: an object (whose fields may be flattened) or anything else.
pub trait Node: Sized {
    /// Its fields, when it is an object (Err: it looks like one but is not).
    fn fields(&self) -> Option<Result<Vec<(String, Self)>, String>>;
    /// It as one column value.
    fn scalar(&self) -> Result<Scalar, String>;
}

/// The columns of one document's `fields`; `flatten` levels of objects become
/// `parent__child` columns.
pub fn columns<N: Node>(
    fields: Vec<(String, N)>,
    flatten: usize,
) -> Result<BTreeMap<String, Scalar>, String> {
    let mut out = BTreeMap::new();
    put(&mut out, None, fields, flatten)?;
    Ok(out)
}

/// Flattened fields under `parent`. Flattening leaves NULLs out: a missing field is NULL
/// too, and a NULL where other documents hold an object would otherwise make a column of
/// its own.
fn put<N: Node>(
    out: &mut BTreeMap<String, Scalar>,
    parent: Option<&str>,
    fields: Vec<(String, N)>,
    depth: usize,
) -> Result<(), String> {
    for (k, v) in fields {
        let name = match parent {
            Some(p) => format!("{p}__{k}"),
            None => k,
        };
        if depth > 0 {
            if let Some(inner) = v.fields() {
                let inner = inner.map_err(|e| format!("field `{name}`: {e}"))?;
                put(out, Some(&name), inner, depth - 1)?;
                continue;
            }
        }
        match v.scalar().map_err(|e| format!("field `{name}`: {e}"))? {
            Scalar::Null if depth > 0 || parent.is_some() => {}
            value => {
                out.insert(name, value);
            }
        }
    }
    Ok(())
}

/// The union of the columns of sampled documents, each with what its values said.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub names: Vec<String>,
    pub infer: Vec<Inference>,
    pub documents: usize,
}

impl Sample {
    pub fn observe(&mut self, doc: &BTreeMap<String, Scalar>) {
        for (k, v) in doc {
            let i = match self.names.iter().position(|n| n == k) {
                Some(i) => i,
                None => {
                    self.names.push(k.clone());
                    self.infer.push(Inference::default());
                    self.names.len() - 1
                }
            };
            v.observe(&mut self.infer[i]);
        }
        self.documents += 1;
    }

    /// The columns: `first` ones in that order, then the rest as first seen.
    pub fn schema(&self, first: &[&str]) -> Schema {
        let mut order: Vec<usize> = first
            .iter()
            .filter_map(|f| self.names.iter().position(|n| n == f))
            .collect();
        let rest: Vec<usize> = (0..self.names.len())
            .filter(|i| !order.contains(i))
            .collect();
        order.extend(rest);
        Schema::new(
            order
                .into_iter()
                .map(|i| field(&self.names[i], &self.infer[i]))
                .collect::<Vec<_>>(),
        )
    }
}

/// A column as inference concluded it: JSON text when every value was an object or array.
pub fn field(name: &str, i: &Inference) -> Field {
    match i.holds_json() {
        true => sluice_core::types::json_field(name),
        false => Field::new(name, i.data_type(), true),
    }
}

/// One document's column texts in `schema`'s order, or the first field that is not a column.
pub fn texts<'a>(
    schema: &Schema,
    doc: &'a BTreeMap<String, Scalar>,
) -> Result<Vec<Option<&'a str>>, String> {
    let mut out = vec![None; schema.fields().len()];
    for (k, v) in doc {
        match schema.index_of(k) {
            Ok(i) => out[i] = v.text(),
            Err(_) => return Err(k.clone()),
        }
    }
    Ok(out)
}

/// The columns as kept in the lake: one `name<TAB>type[<TAB>json]` line per column.
pub fn definitions(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let t = sluice_core::schema::type_name(f.data_type());
            match sluice_core::types::is_json(f) {
                true => format!("{}\t{t}\tjson", f.name()),
                false => format!("{}\t{t}", f.name()),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The columns `definitions` describe.
pub fn from_definitions(definitions: &str) -> Result<SchemaRef, String> {
    let fields = definitions
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            let (Some(name), Some(t)) = (parts.next(), parts.next()) else {
                return Err(format!("definition `{line}` is not `name<TAB>type`"));
            };
            match parts.next() {
                Some("json") => Ok(sluice_core::types::json_field(name)),
                _ => Ok(Field::new(name, sluice_core::types::parse_type(t)?, true)),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// `now` as the lake stored it: with the columns `stored` (its kept definitions) describe,
/// or as it is when none were kept or they are the same.
pub fn table_as_stored(now: &SourceTable, stored: &str) -> Result<SourceTable, String> {
    if stored.is_empty() || stored == now.definitions {
        return Ok(now.clone());
    }
    let schema =
        from_definitions(stored).map_err(|m| format!("{}: stored columns: {m}", now.name))?;
    Ok(SourceTable {
        schema,
        definitions: stored.to_string(),
        ..now.clone()
    })
}

/// `table` with the columns of `docs` it lacks added (their types inferred from those
/// documents, [`roomy`] with `room`); None when it has them all.
pub fn widened(
    table: &SourceTable,
    docs: &[&BTreeMap<String, Scalar>],
    room: bool,
) -> Option<SourceTable> {
    let mut s = Sample::default();
    for d in docs {
        if d.keys().any(|k| table.schema.index_of(k).is_err()) {
            s.observe(d);
        }
    }
    let new: Vec<Field> = s
        .names
        .iter()
        .zip(&s.infer)
        .filter(|(n, _)| table.schema.index_of(n).is_err())
        .map(|(n, i)| match room {
            true => roomy(&field(n, i)),
            false => field(n, i),
        })
        .collect();
    with_columns(table, new)
}

/// `table` with variant columns (`price__text`) for the values of `docs` its columns cannot
/// hold (their types inferred from those documents, [`roomy`] with `room`), as the lake
/// keeps every value; None when none is needed (the documents fail for another reason).
pub fn retyped(
    table: &SourceTable,
    docs: &[&BTreeMap<String, Scalar>],
    room: bool,
) -> Option<SourceTable> {
    let mut s = Sample::default();
    for d in docs {
        s.observe(d);
    }
    let mut incoming = s.schema(&[]);
    if room {
        incoming = Schema::new(
            incoming
                .fields()
                .iter()
                .map(|f| roomy(f))
                .collect::<Vec<_>>(),
        );
    }
    let r = sluice_core::schema::reconcile(&table.schema, &[], &incoming, false);
    with_columns(table, r.add)
}

/// The columns `wider` adds to `table`, as `name type` for the change's statement.
pub fn added_columns(table: &SourceTable, wider: &SourceTable) -> String {
    wider.schema.fields()[table.schema.fields().len()..]
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f.name(),
                sluice_core::schema::type_name(f.data_type())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Digits after the point a stream's decimal column keeps at least.
const ROOMY_SCALE: i8 = 9;

/// `f` with room to grow, for a column inferred from the few values a stream has seen so far
/// (the next value may be larger): integers as bigint, decimals at full precision (at least
/// nine digits after the point), floats as double. Values past that go to a variant column.
pub fn roomy(f: &Field) -> Field {
    use arrow::datatypes::DataType as T;
    let t = match f.data_type() {
        T::Int8 | T::Int16 | T::Int32 | T::UInt8 | T::UInt16 | T::UInt32 => T::Int64,
        T::Decimal128(_, 0) => T::Decimal128(38, 0),
        T::Decimal128(p, s) => {
            let scale = (*s).max(ROOMY_SCALE);
            match (*p as i16 - *s as i16) <= 38 - scale as i16 {
                true => T::Decimal128(38, scale),
                false => T::Decimal128(*p, *s),
            }
        }
        T::Float16 | T::Float32 => T::Float64,
        other => other.clone(),
    };
    f.clone().with_data_type(t)
}

fn with_columns(table: &SourceTable, new: Vec<Field>) -> Option<SourceTable> {
    if new.is_empty() {
        return None;
    }
    let mut fields: Vec<Field> = table
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(new);
    let schema = Arc::new(Schema::new(fields));
    Some(SourceTable {
        definitions: definitions(&schema),
        schema,
        ..table.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip() {
        let schema = Schema::new(vec![
            Field::new("_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(18, 2), true),
            Field::new(
                "t",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            sluice_core::types::json_field("tags"),
        ]);
        let back = from_definitions(&definitions(&schema)).unwrap();
        assert_eq!(back.as_ref(), &schema);
    }

    /// A tiny document tree for the tests.
    enum T {
        Obj(Vec<(String, T)>),
        Num(i64),
        Null,
    }

    impl Node for &T {
        fn fields(&self) -> Option<Result<Vec<(String, Self)>, String>> {
            match self {
                T::Obj(f) => Some(Ok(f.iter().map(|(k, v)| (k.clone(), v)).collect())),
                _ => None,
            }
        }
        fn scalar(&self) -> Result<Scalar, String> {
            Ok(match self {
                T::Num(n) => Scalar::Typed(DataType::Int64, n.to_string()),
                T::Null => Scalar::Null,
                T::Obj(_) => Scalar::Nested("{…}".into()),
            })
        }
    }

    #[test]
    fn flattens_to_max_depth_and_keeps_deeper_objects_whole() {
        let doc = [
            ("a".to_string(), T::Num(1)),
            (
                "b".to_string(),
                T::Obj(vec![
                    ("c".into(), T::Num(2)),
                    ("d".into(), T::Obj(vec![("e".into(), T::Num(3))])),
                    ("n".into(), T::Null),
                ]),
            ),
            ("z".to_string(), T::Null),
        ];
        let fields = || doc.iter().map(|(k, v)| (k.clone(), v)).collect::<Vec<_>>();
        let flat = columns(fields(), 1).unwrap();
        let names: Vec<&str> = flat.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "b__c", "b__d"]);
        assert_eq!(flat["b__d"], Scalar::Nested("{…}".into()));
        let whole = columns(fields(), 0).unwrap();
        assert_eq!(whole["z"], Scalar::Null);
        assert_eq!(whole["b"], Scalar::Nested("{…}".into()));
    }

    #[test]
    fn a_stream_column_has_room_and_a_misfit_gets_a_variant() {
        let doc = |v: &str| BTreeMap::from([("p".to_string(), Scalar::Bare(v.into()))]);
        let empty = SourceTable {
            name: "t".into(),
            schema: Arc::new(Schema::empty()),
            key: Vec::new(),
            definitions: String::new(),
            rows_estimate: 0,
        };
        let t = widened(&empty, &[&doc("1.5")], true).unwrap();
        assert_eq!(t.schema.field(0).data_type(), &DataType::Decimal128(38, 9));
        let t = widened(&empty, &[&doc("7")], true).unwrap();
        assert_eq!(t.schema.field(0).data_type(), &DataType::Int64);
        // A fraction where integers were: a variant column named by its type.
        let wider = retyped(&t, &[&doc("2.25")], true).unwrap();
        assert_eq!(wider.schema.field(1).name(), "p__decimal_38_9");
        assert!(retyped(&t, &[&doc("8")], true).is_none());
        assert_eq!(from_definitions(&wider.definitions).unwrap(), wider.schema);
    }

    #[test]
    fn typed_values_meet_in_their_common_type_and_conflict_as_text() {
        let mut s = Sample::default();
        let doc = |v: Scalar| BTreeMap::from([("x".to_string(), v)]);
        s.observe(&doc(Scalar::Typed(DataType::Int64, "1".into())));
        s.observe(&doc(Scalar::Typed(DataType::Float64, "1.5".into())));
        assert_eq!(s.schema(&[]).field(0).data_type(), &DataType::Float64);
        s.observe(&doc(Scalar::Str("a".into())));
        assert_eq!(s.schema(&[]).field(0).data_type(), &DataType::Utf8);
        assert!(s.infer[0].conflicting_kinds());
    }
}
