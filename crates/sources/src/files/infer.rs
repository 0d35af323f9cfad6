//! Schema inference over a sample of files in any mix of formats, with the evidence for each
//! column's type.
//!
//! ```text
//!   listed files ──spread_sample──► sampled files ──per file──► own columns and types
//!                                                                  │ text: merged samples
//!   folder names (key=value) ──every listed file──► partitions     │ parquet: common type
//!                                                                  ▼
//!                                               one type per column + what each file said
//! ```
//!
//! The sample is spread over the whole listing (first, last and evenly between), so a first
//! file of all-NULLs or all-integers does not decide a column. Text samples of a column merge
//! as if read from one file; typed (Parquet) columns meet in their common type; the two meet
//! where the text parses as the typed column, else in their common type, else in text.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use serde::Serialize;

use sluice_core::schema::{common_type, type_name};
use sluice_core::types::json_field;

use super::{FileEntry, FilesSource, LocalFile};
use crate::values::Inference;
use crate::SourceError;

/// The schema inferred for a table and the evidence behind each column's type.
#[derive(Debug, Clone, Serialize)]
pub struct InferredSchema {
    #[serde(skip)]
    pub schema: Arc<Schema>,
    pub columns: Vec<ColumnReport>,
    pub files_listed: usize,
    pub files_sampled: usize,
}

/// What inference concluded for one column, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// The column comes from folder names (`key=value`), not from the files' contents.
    pub partition: bool,
    /// Sampled files that have the column (partitions: listed files).
    pub files: usize,
    pub values: usize,
    pub nulls: usize,
    /// The type each file's own values point to, with how many files said so and the first.
    pub file_types: Vec<FileTypes>,
    /// A value that ruled out a narrower type, within one file's sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widened_by: Option<String>,
    /// Files or documents disagree in a way only text reconciles: a number in one file and a
    /// date in another, a JSON string in one document and a number or an object in another.
    pub conflict: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileTypes {
    #[serde(rename = "type")]
    pub type_name: String,
    pub files: usize,
    pub first: String,
}

/// Up to `n` files spread over `files`: the first, the last and evenly between.
pub fn spread_sample(files: &[FileEntry], n: usize) -> Vec<FileEntry> {
    if files.len() <= n {
        return files.to_vec();
    }
    let n = n.max(1);
    let mut picks: Vec<usize> = (0..n)
        .map(|i| match n {
            1 => 0,
            _ => i * (files.len() - 1) / (n - 1),
        })
        .collect();
    picks.dedup();
    picks.into_iter().map(|i| files[i].clone()).collect()
}

/// One column as the files of the sample describe it.
#[derive(Default)]
struct Votes {
    name: String,
    text: Option<Inference>,
    typed: Option<DataType>,
    files: usize,
    file_types: Vec<FileTypes>,
    partition: bool,
}

impl Votes {
    fn said(&mut self, t: &DataType, file: &str) {
        let name = type_name(t);
        match self.file_types.iter_mut().find(|f| f.type_name == name) {
            Some(f) => f.files += 1,
            None => self.file_types.push(FileTypes {
                type_name: name,
                files: 1,
                first: file.to_string(),
            }),
        }
    }

    fn data_type(&self) -> DataType {
        let text = self.text.as_ref().filter(|t| t.evidence.values > 0);
        match (&self.typed, text) {
            (None, None) => DataType::Utf8,
            (Some(t), None) => t.clone(),
            (None, Some(text)) => text.data_type(),
            (Some(t), Some(text)) if text.parses_as(t) => t.clone(),
            (Some(t), Some(text)) => common_type(t, &text.data_type()).unwrap_or(DataType::Utf8),
        }
    }

    /// Only JSON objects and arrays, from documents: a JSON column.
    fn holds_json(&self) -> bool {
        self.typed.is_none() && self.text.as_ref().is_some_and(Inference::holds_json)
    }

    fn report(&self, t: &DataType) -> ColumnReport {
        let is_text = |n: &str| n == type_name(&DataType::Utf8);
        let typed_votes = self
            .file_types
            .iter()
            .filter(|f| !is_text(&f.type_name))
            .count();
        let evidence = self.text.as_ref().map(|t| &t.evidence);
        ColumnReport {
            name: self.name.clone(),
            type_name: match self.holds_json() {
                true => "json".into(),
                false => type_name(t),
            },
            partition: self.partition,
            files: self.files,
            values: evidence.map(|e| e.values).unwrap_or(0),
            nulls: evidence.map(|e| e.nulls).unwrap_or(0),
            file_types: self.file_types.clone(),
            widened_by: evidence.and_then(|e| e.widened_by.clone()),
            conflict: matches!(t, DataType::Utf8)
                && (typed_votes > 1
                    || self.text.as_ref().is_some_and(Inference::conflicting_kinds)),
        }
    }
}

fn votes_for<'a>(cols: &'a mut Vec<Votes>, name: &str) -> &'a mut Votes {
    match cols.iter().position(|c| c.name == name) {
        Some(i) => &mut cols[i],
        None => {
            cols.push(Votes {
                name: name.to_string(),
                ..Votes::default()
            });
            cols.last_mut().expect("just pushed")
        }
    }
}

impl FilesSource {
    /// Infers the table schema from `sample` (see [`spread_sample`]); with `partitions = true`
    /// the folder partitions of every `listed` file add their columns.
    pub fn infer_schema(
        &self,
        listed: &[FileEntry],
        sample: &[(FileEntry, LocalFile)],
    ) -> Result<InferredSchema, SourceError> {
        let mut cols: Vec<Votes> = Vec::new();
        // A sampled file that cannot be read says nothing about the others: it is left out
        // here (reading it quarantines it, naming why), unless no sampled file can be read.
        let mut unreadable: Option<SourceError> = None;
        let mut read = 0usize;
        for (entry, file) in sample {
            let format = self.format_of(entry);
            let own = match self.columnar_schema(entry, file, format).transpose() {
                Ok(own) => own,
                Err(e) if e.kind() == sluice_core::retry::ErrorKind::Fatal => {
                    tracing::warn!(source = %self.name, file = %entry.id, error = %e, "a sampled file is unreadable: inferred from the others");
                    unreadable.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(own) = own {
                read += 1;
                for f in own.fields() {
                    let Some(name) = self.mapping.table_name(f.name()) else {
                        continue;
                    };
                    let v = votes_for(&mut cols, name);
                    v.files += 1;
                    v.said(f.data_type(), &entry.id);
                    v.typed = Some(match &v.typed {
                        None => f.data_type().clone(),
                        Some(t) => common_type(t, f.data_type()).unwrap_or(DataType::Utf8),
                    });
                }
                continue;
            }
            let mut names: Vec<String> = Vec::new();
            let mut infer: Vec<Inference> = Vec::new();
            match self.sample_text(entry, file, format, &mut names, &mut infer) {
                Ok(_) => read += 1,
                Err(e) if e.kind() == sluice_core::retry::ErrorKind::Fatal => {
                    tracing::warn!(source = %self.name, file = %entry.id, error = %e, "a sampled file is unreadable: inferred from the others");
                    unreadable.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            for (name, own) in names.iter().zip(&infer) {
                let Some(name) = self.mapping.table_name(name) else {
                    continue;
                };
                let v = votes_for(&mut cols, name);
                v.files += 1;
                if own.evidence.values > 0 {
                    v.said(&own.data_type(), &entry.id);
                }
                v.text.get_or_insert_with(Inference::default).merge(own);
            }
        }
        if read == 0 {
            if let Some(e) = unreadable {
                return Err(e);
            }
        }
        if self.partitions {
            // Every listed file's folders: cheap, and the whole range of values.
            for entry in listed {
                for p in &entry.partitions {
                    let v = votes_for(&mut cols, &p.key);
                    if !v.partition {
                        // A folder key shadows a file column of the same name.
                        *v = Votes {
                            name: p.key.clone(),
                            partition: true,
                            ..Votes::default()
                        };
                    }
                    v.files += 1;
                    let text = v.text.get_or_insert_with(Inference::default);
                    match &p.value {
                        Some(value) => text.observe_text(value),
                        None => text.observe_null(),
                    }
                }
            }
            for v in cols.iter_mut().filter(|v| v.partition) {
                let t = v.text.as_ref().map(Inference::data_type);
                if let Some(t) = t {
                    v.said(&t, "folder names");
                }
            }
        }
        // File columns first, in order of appearance, then the partitions.
        cols.sort_by_key(|c| c.partition);
        let types: Vec<DataType> = cols
            .iter()
            .map(|c| match self.mapping.declared_type(&c.name) {
                Some(t) => t.clone(),
                None => c.data_type(),
            })
            .collect();
        let fields: Vec<Field> = cols
            .iter()
            .zip(&types)
            .map(|(c, t)| {
                let declared = self.mapping.declared_type(&c.name).is_some();
                match c.holds_json() && !declared {
                    true => json_field(&c.name),
                    false => Field::new(&c.name, t.clone(), true),
                }
            })
            .collect();
        Ok(InferredSchema {
            schema: Arc::new(Schema::new(fields)),
            columns: cols.iter().zip(&types).map(|(c, t)| c.report(t)).collect(),
            files_listed: listed.len(),
            files_sampled: sample.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<FileEntry> {
        (0..n)
            .map(|i| FileEntry {
                id: format!("/f{i:02}.csv"),
                path: object_store::path::Path::from(format!("f{i:02}.csv")),
                date: None,
                modified: chrono::Utc::now(),
                size: 1,
                etag: None,
                partitions: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn the_sample_spreads_over_the_listing() {
        let ids = |v: Vec<FileEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(spread_sample(&entries(10), 5)),
            vec!["/f00.csv", "/f02.csv", "/f04.csv", "/f06.csv", "/f09.csv"]
        );
        assert_eq!(spread_sample(&entries(3), 5).len(), 3);
        assert_eq!(ids(spread_sample(&entries(4), 1)), vec!["/f00.csv"]);
    }
}
