//! Column mapping of a files table: file columns renamed (`columns_map`), dropped
//! (`drop_columns`) and typed (`column_types`) on the way into the lake, the same for every
//! format.
//!
//! The table knows only its own names. Inference and sampling see the file's columns through
//! [`ColumnMapping::table_name`]; a read asks the format's reader for the file's own names
//! ([`ColumnMapping::file_side`]), with the dropped columns as extra columns it then leaves
//! out, so each reader keeps its one check that a file holds no column the table lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use sluice_core::types::parse_type;

use crate::SourceError;

#[derive(Debug, Clone, Default)]
pub struct ColumnMapping {
    /// File column name to table column name.
    rename: BTreeMap<String, String>,
    /// File column names not landed.
    drop: BTreeSet<String>,
    /// Table column name to its declared type.
    types: BTreeMap<String, DataType>,
}

impl ColumnMapping {
    pub fn new(
        rename: Option<&BTreeMap<String, String>>,
        drop: Option<&Vec<String>>,
        types: Option<&BTreeMap<String, String>>,
    ) -> Result<ColumnMapping, String> {
        let types = types
            .into_iter()
            .flatten()
            .map(|(c, t)| {
                parse_type(t)
                    .map(|t| (c.clone(), t))
                    .map_err(|m| format!("column_types.{c}: {m}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ColumnMapping {
            rename: rename.cloned().unwrap_or_default(),
            drop: drop.into_iter().flatten().cloned().collect(),
            types,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.drop.is_empty() && self.types.is_empty()
    }

    /// Whether file columns are renamed or dropped (types alone need no translation).
    fn renames(&self) -> bool {
        !self.rename.is_empty() || !self.drop.is_empty()
    }

    /// The table's name for file column `name`; None: it is dropped.
    pub fn table_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.drop.contains(name) {
            return None;
        }
        Some(self.rename.get(name).map_or(name, String::as_str))
    }

    /// The file's name for table column `name`.
    fn file_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.rename
            .iter()
            .find(|(_, to)| *to == name)
            .map_or(name, |(from, _)| from.as_str())
    }

    /// The type declared for table column `name`, if any.
    pub fn declared_type(&self, name: &str) -> Option<&DataType> {
        self.types.get(name)
    }

    /// `fields` (a file's own, or as sampled) as the table sees them: renamed, without the
    /// dropped ones, with declared types.
    pub fn fields_of_file(&self, fields: impl IntoIterator<Item = Field>) -> Vec<Field> {
        fields
            .into_iter()
            .filter_map(|f| {
                let name = self.table_name(f.name())?.to_string();
                let f = match self.declared_type(&name) {
                    Some(t) => Field::new(&name, t.clone(), true),
                    None => f.with_name(&name),
                };
                Some(f)
            })
            .collect()
    }

    /// The schema to ask a reader for, in the file's names: `table`'s columns renamed back,
    /// then the dropped columns (typed as the file has them, `own`, or as text), which
    /// [`ColumnMapping::to_table`] leaves out.
    pub fn file_side(&self, table: &SchemaRef, own: Option<&Schema>) -> SchemaRef {
        if !self.renames() {
            return table.clone();
        }
        let mut fields: Vec<Field> = table
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_name(self.file_name(f.name())))
            .collect();
        for d in &self.drop {
            let t = own
                .and_then(|s| s.field_with_name(d).ok())
                .map_or(DataType::Utf8, |f| f.data_type().clone());
            fields.push(Field::new(d, t, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// A batch read with [`ColumnMapping::file_side`] as `table`'s.
    pub fn to_table(
        &self,
        table: &SchemaRef,
        batch: RecordBatch,
        file: &str,
    ) -> Result<RecordBatch, SourceError> {
        if !self.renames() {
            return Ok(batch);
        }
        let columns = batch.columns()[..table.fields().len()].to_vec();
        RecordBatch::try_new(table.clone(), columns).map_err(|source| SourceError::Arrow {
            file: file.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> ColumnMapping {
        ColumnMapping::new(
            Some(&BTreeMap::from([(
                "Cust ID".to_string(),
                "customer_id".to_string(),
            )])),
            Some(&vec!["note".to_string()]),
            Some(&BTreeMap::from([(
                "amount".to_string(),
                "decimal(12,2)".to_string(),
            )])),
        )
        .unwrap()
    }

    /// A file's columns come out renamed, without the dropped one, with the declared type; the
    /// read schema names them as the file does and carries the dropped one last.
    #[test]
    fn file_columns_as_the_table_sees_them_and_back() {
        let m = mapping();
        let file = vec![
            Field::new("Cust ID", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ];
        let table = Arc::new(Schema::new(m.fields_of_file(file.clone())));
        let names: Vec<&str> = table.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["customer_id", "amount"]);
        assert_eq!(
            table.field(1).data_type(),
            &DataType::Decimal128(12, 2),
            "declared type"
        );
        let read = m.file_side(&table, Some(&Schema::new(file)));
        let names: Vec<&str> = read.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["Cust ID", "amount", "note"]);
        assert_eq!(read.field(2).data_type(), &DataType::Utf8);
        let batch = RecordBatch::new_empty(read);
        let back = m.to_table(&table, batch, "f.csv").unwrap();
        assert_eq!(back.schema(), table);
        assert!(ColumnMapping::new(
            None,
            None,
            Some(&BTreeMap::from([("x".into(), "nope".into())]))
        )
        .is_err());
    }
}
