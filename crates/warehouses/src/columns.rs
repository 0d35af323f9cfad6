//! A load's columns: the lake's source columns mapped to warehouse identifiers once, by the
//! one naming function, and the key columns found among them.

use arrow::datatypes::{FieldRef, SchemaRef};

use sluice_core::change::is_change_column;
use sluice_core::config::LoadMode;
use sluice_core::names::identifiers;

use crate::{Target, WarehouseError};

pub struct Columns {
    /// The source columns of the change schema, in lake order.
    pub fields: Vec<FieldRef>,
    /// Their warehouse names (same order).
    pub mapped: Vec<String>,
}

impl Columns {
    pub fn new(schema: &SchemaRef, max_identifier: usize) -> Columns {
        let fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !is_change_column(f.name()))
            .cloned()
            .collect();
        let mapped = identifiers(fields.iter().map(|f| f.name().as_str()), max_identifier);
        Columns { fields, mapped }
    }

    /// The warehouse name of a source column.
    pub fn mapped_of(&self, source_name: &str) -> Option<&str> {
        self.fields
            .iter()
            .position(|f| f.name() == source_name)
            .map(|i| self.mapped[i].as_str())
    }

    /// The target's key columns, mapped; an error when one is missing or merge/history has none.
    pub fn keys(&self, target: &Target) -> Result<Vec<String>, WarehouseError> {
        let keys = target
            .key
            .iter()
            .map(|k| {
                self.mapped_of(k)
                    .map(String::from)
                    .ok_or_else(|| WarehouseError::Schema {
                        table: target.display(),
                        message: format!("key column `{k}` is not a column of the table"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Merge without a key matches rows on their identity (`_sluice_row_id`); history
        // keeps versions of a key, and a soft delete flags the one row of a key.
        let keyless_refused = match target.mode {
            LoadMode::History => Some("history keeps versions per key"),
            LoadMode::Merge if target.deletes == sluice_core::config::Deletes::Soft => {
                Some("soft deletes flag a key's row")
            }
            _ => None,
        };
        if let (true, Some(why)) = (keys.is_empty(), keyless_refused) {
            return Err(WarehouseError::Schema {
                table: target.display(),
                message: format!("{why}: it needs key columns (primary_key)"),
            });
        }
        Ok(keys)
    }

    /// `(warehouse name, SQL type)` of every source column through a warehouse's type mapping.
    pub fn typed(
        &self,
        target: &Target,
        sql_type: impl Fn(&arrow::datatypes::Field) -> Option<String>,
    ) -> Result<Vec<(String, String)>, WarehouseError> {
        self.fields
            .iter()
            .zip(&self.mapped)
            .map(|(f, m)| {
                sql_type(f)
                    .map(|t| (m.clone(), t))
                    .ok_or_else(|| WarehouseError::Type {
                        table: target.display(),
                        column: f.name().clone(),
                        data_type: f.data_type().to_string(),
                    })
            })
            .collect()
    }
}

impl Columns {
    /// `(warehouse name, SQL type)` of every column of the change `schema`, in order: the
    /// source columns mapped, the change columns as they are. A staging table's shape.
    pub fn staged(
        &self,
        schema: &SchemaRef,
        target: &Target,
        sql_type: impl Fn(&arrow::datatypes::Field) -> Option<String>,
    ) -> Result<Vec<(String, String)>, WarehouseError> {
        schema
            .fields()
            .iter()
            .map(|f| {
                let name = match is_change_column(f.name()) {
                    true => f.name().clone(),
                    false => self.mapped_of(f.name()).expect("data column").to_string(),
                };
                sql_type(f)
                    .map(|t| (name, t))
                    .ok_or_else(|| WarehouseError::Type {
                        table: target.display(),
                        column: f.name().clone(),
                        data_type: f.data_type().to_string(),
                    })
            })
            .collect()
    }
}

/// The columns a load would add to an existing table, if the schema gate allowed them
/// (`add_columns`); else an error naming them.
fn columns_to_add<'a>(
    target: &Target,
    existing: &[String],
    wanted: &'a [(String, String)],
) -> Result<Vec<&'a (String, String)>, WarehouseError> {
    let missing = crate::sql::missing_columns(existing, wanted);
    if missing.is_empty() || target.add_columns {
        return Ok(missing);
    }
    let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
    Err(WarehouseError::Schema {
        table: target.display(),
        message: format!(
            "the load has column(s) {} that the warehouse table lacks, and the schema gate did not allow adding them (see `sluice schema diff`)",
            names.join(", ")
        ),
    })
}

/// What a load does to its target table before loading.
pub struct TableShape {
    /// `CREATE SCHEMA/TABLE`, or `ALTER TABLE ... ADD COLUMN` per added column; may be empty.
    pub statements: String,
    /// The table's columns afterwards, in table order.
    pub columns: Vec<String>,
    pub created: bool,
}

/// Shapes `tgt` (quoted) for a load: created with `create` (`(name, type and constraints)`)
/// when `existing` is empty (it does not exist), else grown by the `data` columns it lacks
/// when the policy allows.
pub fn shape_table(
    target: &Target,
    tgt: &str,
    existing: Vec<String>,
    data: &[(String, String)],
    create: &[(String, String)],
) -> Result<TableShape, WarehouseError> {
    use sluice_core::names::quote_ident as q;
    if existing.is_empty() {
        let cols: Vec<String> = create
            .iter()
            .map(|(n, t)| format!("{} {t}", q(n)))
            .collect();
        return Ok(TableShape {
            statements: format!(
                "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {tgt} ({});",
                q(&target.schema),
                cols.join(", ")
            ),
            columns: create.iter().map(|(n, _)| n.clone()).collect(),
            created: true,
        });
    }
    let mut statements = String::new();
    let mut columns = existing.clone();
    for (n, t) in columns_to_add(target, &existing, data)? {
        tracing::info!(target = %target.display(), column = %n, "adding column (schema gate)");
        statements += &format!("ALTER TABLE {tgt} ADD COLUMN {} {t};\n", q(n));
        columns.push(n.clone());
    }
    Ok(TableShape {
        statements,
        columns,
        created: false,
    })
}
