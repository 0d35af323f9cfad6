//! What one run of a transform reads and computes: the lake tables its SQL names (found by
//! DataFusion's parser), each pinned at the version the lake holds when the run starts; other
//! transforms it names, inlined as views of their SQL over the same inputs (so a run never
//! reads another transform's table half a run behind); the result's columns as the lake
//! keeps them; and the difference between the result and what the lake holds, as changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::SessionContext;
use datafusion::sql::TableReference;

use sluice_core::config::{TransformConfig, TRANSFORMS_SOURCE};
use sluice_core::names::quote_ident as q;
use sluice_core::schema::variant_name;
use sluice_core::types::{is_json, json_field, MAX_DECIMAL_PRECISION};
use sluice_lake::{Lake, LakeTable};
use sluice_sources::source::Position;

use crate::query::{new_session, quoted_reference, register_source_table};
use crate::EngineError;

/// The name a run sees its own table's current state under (no SQL can name it).
pub(super) const OWN_STATE: &str = "__sluice_own_state";
/// Columns the difference adds to each result row.
pub(super) const OP_COLUMN: &str = "__sluice_op";
pub(super) const COUNT_COLUMN: &str = "__sluice_n";

/// A transform's run, ready to compute: its session and where its inputs stood.
pub(super) struct Run {
    pub ctx: SessionContext,
    /// A digest of the SQL (its own and every transform it inlines), the key, and each input
    /// table's version: the same position means the same result.
    pub at: Position,
    /// The lake tables it reads (`source`, `table`, change log at the version registered),
    /// and the transforms it inlines.
    pub inputs: Vec<(String, String, LakeTable)>,
    pub inlined: Vec<String>,
}

fn usage(name: &str, message: String) -> EngineError {
    EngineError::Usage(format!("transform {name}: {message}"))
}

/// The tables `sql` reads, as written (CTE names excluded).
fn references(name: &str, sql: &str) -> Result<Vec<TableReference>, EngineError> {
    crate::query::table_references(sql)
        .map_err(|e| usage(name, format!("its SQL does not parse: {e}")))
}

/// A lake table an input name stands for: `source.table`, its `__changes` or `__quarantine`.
fn lake_table(r: &TableReference) -> Option<(String, String)> {
    let schema = r.schema()?;
    let table = r.table();
    let base = table
        .strip_suffix("__changes")
        .or_else(|| table.strip_suffix("__quarantine"))
        .unwrap_or(table);
    Some((schema.to_string(), base.to_string()))
}

/// What `name` reads, transitively: the lake tables, and the transforms to inline, each after
/// those it reads.
#[derive(Default)]
struct Reads {
    tables: BTreeSet<(String, String)>,
    inlined: Vec<String>,
}

fn collect(
    transforms: &BTreeMap<String, TransformConfig>,
    name: &str,
    path: &mut Vec<String>,
    reads: &mut Reads,
) -> Result<(), EngineError> {
    let root = path.first().cloned().unwrap_or_else(|| name.to_string());
    let t = transforms.get(name).ok_or_else(|| {
        usage(
            &root,
            format!("reads transforms.{name}, which is not configured"),
        )
    })?;
    for r in references(name, &t.sql)? {
        let Some((source, table)) = lake_table(&r) else {
            return Err(usage(
                name,
                format!("`{r}` names no source: write source.table (as `sluice query` does)"),
            ));
        };
        if source != TRANSFORMS_SOURCE {
            reads.tables.insert((source, table));
            continue;
        }
        if table == root || path.contains(&table) {
            return Err(usage(
                &root,
                format!("reads itself through transforms.{table}: a cycle"),
            ));
        }
        if !reads.inlined.contains(&table) {
            path.push(table.clone());
            collect(transforms, &table, path, reads)?;
            path.pop();
            reads.inlined.push(table);
        }
    }
    Ok(())
}

/// A run of transform `name` over the lake as it is now: every table it reads registered at
/// its current version, the transforms it reads as views, and its own table's current state
/// (keyed by `key`) as [`OWN_STATE`].
pub(super) async fn open(
    lake: &Lake,
    transforms: &BTreeMap<String, TransformConfig>,
    name: &str,
    key: &[String],
) -> Result<Run, EngineError> {
    let mut reads = Reads::default();
    collect(transforms, name, &mut vec![name.to_string()], &mut reads)?;
    let ctx = new_session()?;
    let mut digest = blake3::Hasher::new();
    for n in std::iter::once(name).chain(reads.inlined.iter().map(String::as_str)) {
        digest.update(format!("{n}\0{}\0", transforms[n].sql).as_bytes());
    }
    digest.update(format!("key\0{}\0", key.join("\0")).as_bytes());
    let mut inputs = Vec::with_capacity(reads.tables.len());
    for (source, table) in &reads.tables {
        let Some(log) = register_source_table(&ctx, lake, source, table, None).await? else {
            return Err(EngineError::Source(sluice_sources::SourceError::Unavailable {
                source_name: TRANSFORMS_SOURCE.into(),
                message: format!(
                    "{name} reads {source}.{table}, which has landed nothing in the lake yet (sync {source} first)"
                ),
            }));
        };
        digest.update(format!("{source}.{table}\0{}\0", log.version()).as_bytes());
        inputs.push((source.clone(), table.clone(), log));
    }
    if !reads.inlined.is_empty() {
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| EngineError::Internal("DataFusion default catalog missing".into()))?;
        if catalog.schema(TRANSFORMS_SOURCE).is_none() {
            catalog.register_schema(TRANSFORMS_SOURCE, Arc::new(MemorySchemaProvider::new()))?;
        }
    }
    for n in &reads.inlined {
        let view = TableReference::partial(TRANSFORMS_SOURCE, n.as_str());
        ctx.sql(&format!(
            "CREATE VIEW {} AS {}",
            quoted_reference(&view),
            transforms[n].sql
        ))
        .await
        .map_err(|e| usage(name, format!("reading transforms.{n}: {e}")))?
        .collect()
        .await?;
    }
    Ok(Run {
        ctx,
        at: Position(digest.finalize().as_bytes().to_vec()),
        inputs,
        inlined: reads.inlined,
    })
}

/// The columns of `name`'s result as the lake keeps them: each type mapped to the one the
/// lake and every warehouse take (text for any string type, microsecond timestamps, int16 for
/// the smaller integers), JSON text kept as JSON. A type with no such form is refused,
/// naming the column.
pub(super) async fn result_schema(
    run: &Run,
    name: &str,
    sql: &str,
    key: &[String],
) -> Result<SchemaRef, EngineError> {
    let df = run
        .ctx
        .sql(sql)
        .await
        .map_err(|e| usage(name, e.to_string()))?;
    let schema = df.schema().as_arrow().clone();
    let mut fields = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        if f.name().starts_with("_sluice_") || f.name().starts_with("__sluice") {
            return Err(usage(
                name,
                format!(
                    "column `{}`: names starting with _sluice_ are sluice's own (alias it, e.g. AS source_ts)",
                    f.name()
                ),
            ));
        }
        if fields.iter().any(|g: &Field| g.name() == f.name()) {
            return Err(usage(
                name,
                format!("column `{}` appears twice: alias one", f.name()),
            ));
        }
        let t = lake_type(f.data_type()).ok_or_else(|| {
            usage(
                name,
                format!(
                    "column `{}` is of type {}, which the lake does not keep: cast it (to text, a number, a date or a timestamp)",
                    f.name(),
                    f.data_type()
                ),
            )
        })?;
        fields.push(match is_json(f) && t == DataType::Utf8 {
            true => json_field(f.name()),
            false => Field::new(f.name(), t, true),
        });
    }
    for k in key {
        if !fields.iter().any(|f| f.name() == k) {
            return Err(usage(
                name,
                format!("primary_key column `{k}` is not in the result"),
            ));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The type the lake keeps a result column of type `t` as (None: none).
fn lake_type(t: &DataType) -> Option<DataType> {
    Some(match t {
        DataType::Boolean => DataType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => DataType::Int16,
        DataType::Int32 | DataType::UInt16 => DataType::Int32,
        DataType::Int64 | DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 | DataType::Float32 => DataType::Float32,
        DataType::Float64 => DataType::Float64,
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s)
            if *p <= MAX_DECIMAL_PRECISION && *s >= 0 =>
        {
            DataType::Decimal128(*p, *s)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Date32 | DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, zone) => {
            DataType::Timestamp(TimeUnit::Microsecond, zone.as_ref().map(|_| "UTC".into()))
        }
        DataType::Null => DataType::Utf8,
        _ => return None,
    })
}

/// The changes that take the table from its current state ([`OWN_STATE`]) to `sql`'s
/// result: result rows that are new (`c`) or differ in some column (`u`), and the keys the
/// result no longer has (`d`, with the row they had). Each row carries how many result rows
/// share its key ([`COUNT_COLUMN`]: more than one is the SQL's error). One outer join, so the
/// SQL is computed once. `own` is the table's lake schema: a column whose type changed holds
/// its values since the change in its variant column (`total__double`), read first.
pub(super) fn difference(sql: &str, schema: &Schema, key: &[String], own: &Schema) -> String {
    let current = schema
        .fields()
        .iter()
        .map(|f| {
            let variant = variant_name(f.name(), f.data_type());
            match own.index_of(&variant) {
                Ok(_) => format!(
                    "COALESCE({}, {}) AS {}",
                    q(&variant),
                    q(f.name()),
                    q(f.name())
                ),
                Err(_) => q(f.name()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let cols: Vec<String> = schema.fields().iter().map(|f| q(f.name())).collect();
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    let join = |sep: &str, f: &dyn Fn(&String) -> String, of: &[String]| {
        of.iter().map(f).collect::<Vec<_>>().join(sep)
    };
    // The result as the lake keeps it, so a value compares equal to itself once landed.
    let typed = schema
        .fields()
        .iter()
        .map(|f| {
            let t = f.data_type().to_string().replace('\'', "''");
            format!("arrow_cast(__sluice_q.{c}, '{t}') AS {c}", c = q(f.name()))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH __sluice_new AS (
           SELECT *, true AS __sluice_present, count(*) OVER (PARTITION BY {keys}) AS {n}
             FROM (SELECT {typed} FROM ({sql}) AS __sluice_q) AS __sluice_t),
         __sluice_cur AS (SELECT {current}, true AS __sluice_here FROM {own})
         SELECT {picked},
                CASE WHEN n.__sluice_present IS NULL THEN 'd'
                     WHEN c.__sluice_here IS NULL THEN 'c' ELSE 'u' END AS {op},
                COALESCE(n.{n}, 1) AS {n}
           FROM __sluice_new n FULL OUTER JOIN __sluice_cur c ON {on}
          WHERE n.__sluice_present IS NULL OR c.__sluice_here IS NULL OR {differs}",
        keys = keys.join(", "),
        n = COUNT_COLUMN,
        op = OP_COLUMN,
        own = q(OWN_STATE),
        picked = join(
            ", ",
            &|c| format!("CASE WHEN n.__sluice_present THEN n.{c} ELSE c.{c} END AS {c}"),
            &cols
        ),
        on = join(" AND ", &|k| format!("n.{k} = c.{k}"), &keys),
        // Parenthesized: the parser binds OR tighter than IS DISTINCT FROM.
        differs = join(
            " OR ",
            &|c| format!("(n.{c} IS DISTINCT FROM c.{c})"),
            &cols
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform(sql: &str) -> TransformConfig {
        TransformConfig {
            sql: sql.into(),
            primary_key: Some(vec!["k".into()]),
            schedule: None,
            warehouse: None,
            load: None,
            deletes: None,
            schema_changes: None,
        }
    }

    #[test]
    fn reads_are_found_through_inlined_transforms_and_cycles_refused() {
        let mut t = BTreeMap::new();
        t.insert(
            "a".to_string(),
            transform("WITH x AS (SELECT * FROM shop.orders) SELECT * FROM x JOIN clicks.events__changes e ON true"),
        );
        t.insert(
            "b".to_string(),
            transform("SELECT * FROM transforms.a JOIN shop.customers USING (k)"),
        );
        let mut reads = Reads::default();
        collect(&t, "b", &mut vec!["b".into()], &mut reads).unwrap();
        let tables: Vec<_> = reads.tables.iter().cloned().collect();
        assert_eq!(
            tables,
            vec![
                ("clicks".to_string(), "events".to_string()),
                ("shop".to_string(), "customers".to_string()),
                ("shop".to_string(), "orders".to_string()),
            ]
        );
        assert_eq!(reads.inlined, vec!["a".to_string()]);

        t.insert("a".to_string(), transform("SELECT * FROM transforms.b"));
        let err = collect(&t, "b", &mut vec!["b".into()], &mut Reads::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cycle"), "{err}");
        t.insert("c".to_string(), transform("SELECT * FROM orders"));
        let err = collect(&t, "c", &mut vec!["c".into()], &mut Reads::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no source"), "{err}");
    }

    #[test]
    fn result_types_map_to_lake_types() {
        assert_eq!(lake_type(&DataType::Utf8View), Some(DataType::Utf8));
        assert_eq!(lake_type(&DataType::Int8), Some(DataType::Int16));
        assert_eq!(
            lake_type(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("+02:00".into())
            )),
            Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
        );
        assert_eq!(lake_type(&DataType::Decimal256(40, 2)), None);
        assert_eq!(
            lake_type(&DataType::List(Arc::new(Field::new(
                "x",
                DataType::Int32,
                true
            )))),
            None
        );
    }
}
