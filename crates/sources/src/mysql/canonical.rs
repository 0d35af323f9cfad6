//! Reconciliation reads: a table as MySQL/MariaDB checksums it ([`sluice_core::canon`]), each
//! column rendered from its own definition, and the queries run for it.

use mysql_async::prelude::Queryable;

use sluice_core::canon::{Column, Dialect, Render, Side};

use super::columns::{ColumnDef, Kind};
use super::MySql;
use crate::SourceError;

/// How a column's values are written into the canonical text, from what the server stores:
/// BIT(n) is a number to the server and ⌈n/8⌉ big-endian bytes in the lake; a geometry loses
/// its 4-byte SRID prefix on the way in.
pub fn render(def: &ColumnDef) -> Render {
    match def.kind() {
        Kind::Int { .. } | Kind::Year => Render::Integer,
        Kind::UnsignedBig | Kind::Decimal { .. } => Render::Decimal,
        Kind::Float | Kind::Double => Render::Float,
        Kind::Bool => Render::Bool,
        Kind::Bits { bytes } => Render::Hex {
            width: Some(bytes),
            skip: 0,
        },
        Kind::FixedBinary { .. } | Kind::Binary => Render::Hex {
            width: None,
            skip: 0,
        },
        Kind::Geometry => Render::Hex {
            width: None,
            skip: 4,
        },
        Kind::WideDecimal
        | Kind::Text { .. }
        | Kind::Enum { .. }
        | Kind::Set { .. }
        | Kind::Time { .. } => Render::Text,
        Kind::Json => Render::Left(
            "JSON: the lake holds it re-serialized, so its text is not the server's".into(),
        ),
        Kind::Date => Render::Date,
        Kind::DateTime => Render::DateTime,
        Kind::Timestamp => Render::TimestampUtc,
    }
}

/// The table's side of a comparison: its key, then every other column in table order.
pub fn side(mysql: &MySql, name: &str, defs: &[ColumnDef], key: &[String]) -> Side {
    let column = |d: &ColumnDef| Column {
        name: d.name.clone(),
        render: render(d),
    };
    Side {
        dialect: Dialect::MySql,
        relation: mysql.relation(name),
        key: key
            .iter()
            .filter_map(|k| defs.iter().find(|d| &d.name == k))
            .map(column)
            .collect(),
        columns: defs
            .iter()
            .filter(|d| !key.contains(&d.name))
            .map(column)
            .collect(),
        exclude: None,
    }
}

/// Runs `sql`, every value as text.
pub async fn query_text(mysql: &MySql, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
    let mut conn = mysql.connect().await?;
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(|e| mysql.db_err("computing checksums", e))?;
    let _ = conn.disconnect().await;
    Ok(rows
        .into_iter()
        .map(|r| r.unwrap().into_iter().map(text).collect())
        .collect())
}

fn text(v: mysql_async::Value) -> Option<String> {
    use mysql_async::Value;
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}
