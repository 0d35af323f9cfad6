//! Column types as users write them (`columns = ["s_acctbal decimal(15,2)"]`), mapped to Arrow
//! in this one place. The lake stores Arrow types; every warehouse maps Arrow onward.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};

/// Arrow's canonical extension type for JSON text, in a field's metadata under
/// [`EXTENSION_KEY`]: warehouses give such columns their JSON type (JSONB, SUPER).
pub const JSON_EXTENSION: &str = "arrow.json";
pub const EXTENSION_KEY: &str = "ARROW:extension:name";

/// A nullable text column holding JSON documents.
pub fn json_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_metadata(
        [(EXTENSION_KEY.to_string(), JSON_EXTENSION.to_string())]
            .into_iter()
            .collect(),
    )
}

/// Whether a field is text marked as JSON.
pub fn is_json(field: &Field) -> bool {
    matches!(
        field.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) && field
        .metadata()
        .get(EXTENSION_KEY)
        .is_some_and(|n| n == JSON_EXTENSION)
}

/// Largest decimal precision the lake (Delta) and every warehouse here accepts.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// Whether values of `t` have parts (lists, structs, maps): the lake keeps them as they are,
/// DuckDB in its own nested types, PostgreSQL as JSONB and Redshift as SUPER.
pub fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
            | DataType::Map(_, _)
    )
}

/// The type the lake keeps a file's column of type `t` as, nested types included, every
/// value whole: Delta has no unsigned, half-float, dictionary or NULL type, so those widen
/// to the Delta type that holds them (a NULL-typed column is text, all NULL). Nested types
/// keep their shape with every part nullable (a later file may hold NULL where this one
/// did not) except map keys, which never are. None: Delta holds no such values (times,
/// durations, intervals).
pub fn lake_type(t: &DataType) -> Option<DataType> {
    use DataType as T;
    let element = |f: &FieldRef| -> Option<FieldRef> {
        Some(Arc::new(Field::new(
            f.name(),
            lake_type(f.data_type())?,
            true,
        )))
    };
    Some(match t {
        T::Null => T::Utf8,
        T::Float16 => T::Float32,
        T::UInt8 => T::Int16,
        T::UInt16 => T::Int32,
        T::UInt32 => T::Int64,
        T::UInt64 => T::Decimal128(20, 0),
        T::LargeUtf8 | T::Utf8View => T::Utf8,
        T::LargeBinary | T::BinaryView | T::FixedSizeBinary(_) => T::Binary,
        T::Dictionary(_, values) => return lake_type(values),
        T::Decimal32(p, s) | T::Decimal64(p, s) => T::Decimal128(*p, *s),
        T::Decimal256(p, s) if *p <= MAX_DECIMAL_PRECISION => T::Decimal128(*p, *s),
        T::List(f) | T::LargeList(f) | T::ListView(f) | T::LargeListView(f) => T::List(element(f)?),
        T::FixedSizeList(f, _) => T::List(element(f)?),
        T::Struct(fields) => T::Struct(
            fields
                .iter()
                .map(element)
                .collect::<Option<Vec<_>>>()?
                .into(),
        ),
        T::Map(entries, sorted) => {
            let T::Struct(kv) = entries.data_type() else {
                return None;
            };
            let [key, value] = kv.iter().collect::<Vec<_>>()[..] else {
                return None;
            };
            let key = Field::new(key.name(), lake_type(key.data_type())?, false);
            let kv = T::Struct(vec![Arc::new(key), element(value)?].into());
            T::Map(Arc::new(Field::new(entries.name(), kv, false)), *sorted)
        }
        T::Boolean
        | T::Int8
        | T::Int16
        | T::Int32
        | T::Int64
        | T::Float32
        | T::Float64
        | T::Utf8
        | T::Binary
        | T::Date32
        | T::Date64
        | T::Timestamp(_, _) => t.clone(),
        T::Decimal128(p, _) if *p <= MAX_DECIMAL_PRECISION => t.clone(),
        _ => return None,
    })
}

/// Parses a column type name (case-insensitive): `int`, `bigint`, `smallint`, `double`, `float`,
/// `decimal(p,s)`, `text`/`varchar[(n)]`/`string`/`char[(n)]`, `bool`, `date`, `timestamp`
/// (no zone), `timestamptz` (UTC instant), `json` (kept as JSON text), `binary`.
pub fn parse_type(name: &str) -> Result<DataType, String> {
    let lower = name.trim().to_ascii_lowercase();
    let (base, args) = match lower.find('(') {
        Some(open) if lower.ends_with(')') => (
            lower[..open].trim(),
            Some(&lower[open + 1..lower.len() - 1]),
        ),
        Some(_) => return Err(format!("unbalanced parentheses in type `{name}`")),
        None => (lower.as_str(), None),
    };
    let t = match base {
        "smallint" | "int2" | "short" => DataType::Int16,
        "int" | "integer" | "int4" => DataType::Int32,
        "bigint" | "int8" | "long" => DataType::Int64,
        "float" | "real" | "float4" => DataType::Float32,
        "double" | "float8" | "double precision" => DataType::Float64,
        "bool" | "boolean" => DataType::Boolean,
        "text" | "string" | "varchar" | "char" | "json" => DataType::Utf8,
        "binary" | "bytea" | "blob" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" | "datetime" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "decimal" | "numeric" => {
            let (p, s) = match args {
                Some(a) => {
                    let mut parts = a.split(',').map(|x| x.trim().parse::<u8>());
                    let p = parts.next().and_then(Result::ok);
                    let s = parts.next().unwrap_or(Ok(0)).ok();
                    match (p, s) {
                        (Some(p), Some(s)) => (p, s),
                        _ => return Err(format!("bad decimal arguments in `{name}`")),
                    }
                }
                None => (MAX_DECIMAL_PRECISION, 9),
            };
            if p == 0 || p > MAX_DECIMAL_PRECISION || s > p {
                return Err(format!(
                    "decimal({p},{s}) is out of range: precision 1..={MAX_DECIMAL_PRECISION}, scale <= precision"
                ));
            }
            return Ok(DataType::Decimal128(p, s as i8));
        }
        _ => return Err(format!("unknown type `{name}`")),
    };
    // Length arguments (varchar(100)) are accepted and ignored: text is unbounded here.
    if args.is_some() && !matches!(t, DataType::Utf8) {
        return Err(format!("type `{base}` takes no arguments (in `{name}`)"));
    }
    Ok(t)
}

/// The config-style name of an Arrow type, for messages and `schema show`.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "bool".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_types_widen_what_delta_lacks_and_keep_nested_shapes() {
        let list = |t: DataType, nullable: bool| {
            DataType::List(Arc::new(Field::new("element", t, nullable)))
        };
        assert_eq!(lake_type(&DataType::Float16), Some(DataType::Float32));
        assert_eq!(lake_type(&DataType::Null), Some(DataType::Utf8));
        assert_eq!(
            lake_type(&DataType::UInt64),
            Some(DataType::Decimal128(20, 0))
        );
        // A list of NULL type is kept, its parts nullable.
        assert_eq!(
            lake_type(&list(DataType::Null, false)),
            Some(list(DataType::Utf8, true))
        );
        let fixed =
            DataType::FixedSizeList(Arc::new(Field::new("element", DataType::Float16, false)), 3);
        assert_eq!(lake_type(&fixed), Some(list(DataType::Float32, true)));
        let dict = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::LargeUtf8));
        assert_eq!(lake_type(&dict), Some(DataType::Utf8));
        // Map keys stay non-nullable; values become nullable.
        let entries = |k: DataType, v: DataType, vn: bool| {
            DataType::Map(
                Arc::new(Field::new(
                    "key_value",
                    DataType::Struct(
                        vec![Field::new("key", k, false), Field::new("value", v, vn)].into(),
                    ),
                    false,
                )),
                false,
            )
        };
        assert_eq!(
            lake_type(&entries(DataType::UInt32, DataType::UInt8, false)),
            Some(entries(DataType::Int64, DataType::Int16, true))
        );
        assert!(is_nested(&entries(DataType::Utf8, DataType::Utf8, true)));
        assert!(!is_nested(&DataType::Utf8));
        // What Delta cannot hold is refused, nested or not.
        assert_eq!(lake_type(&DataType::Duration(TimeUnit::Second)), None);
        assert_eq!(
            lake_type(&list(DataType::Time32(TimeUnit::Second), true)),
            None
        );
    }

    #[test]
    fn parses_every_documented_name() {
        assert_eq!(parse_type("BIGINT").unwrap(), DataType::Int64);
        assert_eq!(
            parse_type("decimal(15, 2)").unwrap(),
            DataType::Decimal128(15, 2)
        );
        assert_eq!(parse_type("varchar(100)").unwrap(), DataType::Utf8);
        assert_eq!(
            parse_type("timestamptz").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(parse_type("decimal(39,2)").is_err());
        assert!(parse_type("int(3)").is_err());
        assert!(parse_type("money").unwrap_err().contains("money"));
        for t in [
            "int",
            "bigint",
            "double",
            "bool",
            "date",
            "timestamp",
            "decimal(12,3)",
            "text",
        ] {
            let dt = parse_type(t).unwrap();
            assert_eq!(parse_type(&type_name(&dt)).unwrap(), dt);
        }
    }
}
