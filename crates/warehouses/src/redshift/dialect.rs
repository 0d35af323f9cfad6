//! Redshift's dialect, as text: column types, table DDL with its physical layout, the
//! manifest and its COPY, VARCHAR sizing and the ledger upsert. Nothing here talks to a
//! server; the golden files under `tests/golden/redshift/` pin every statement.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Field};

use sluice_core::change::{OP, SEQ};
use sluice_core::config::Layout;
use sluice_core::names::quote_ident as q;

use crate::sql::SystemTypes;

/// Redshift's identifier limit in bytes.
pub const MAX_IDENTIFIER: usize = 127;
/// The widest VARCHAR, in bytes.
pub const MAX_VARCHAR: usize = 65_535;
/// The widest VARBYTE, in bytes.
pub const MAX_VARBYTE: usize = 1_024_000;
/// The narrowest VARCHAR sluice declares.
const MIN_VARCHAR: usize = 16;

pub const SYSTEM_TYPES: SystemTypes = SystemTypes {
    text: "VARCHAR(8)",
    row_id: "VARCHAR(32)",
    bigint: "BIGINT",
    timestamptz: "TIMESTAMPTZ",
    boolean: "BOOLEAN",
};

/// How a column's values are bounded in Redshift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Fixed width (numbers, times, booleans).
    Fixed,
    /// VARCHAR, sized from the data, at most [`MAX_VARCHAR`] bytes.
    Text,
    /// JSON: staged as VARCHAR, parsed into SUPER; a document over [`MAX_VARCHAR`] bytes
    /// cannot be cut and still parse, so it loads as NULL (flagged).
    Json,
    /// VARBYTE, at most [`MAX_VARBYTE`] bytes.
    Bytes,
    /// Lists, structs and maps: SUPER, copied from the lake's Parquet as they are
    /// (`SERIALIZETOJSON`), never cut.
    Nested,
}

impl Bound {
    pub fn of(field: &Field) -> Bound {
        if sluice_core::types::is_json(field) {
            return Bound::Json;
        }
        if sluice_core::types::is_nested(field.data_type()) {
            return Bound::Nested;
        }
        match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Bound::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Bound::Bytes,
            _ => Bound::Fixed,
        }
    }

    /// The most bytes a value may have.
    pub fn limit(self) -> Option<usize> {
        match self {
            Bound::Fixed | Bound::Nested => None,
            Bound::Text | Bound::Json => Some(MAX_VARCHAR),
            Bound::Bytes => Some(MAX_VARBYTE),
        }
    }
}

/// The VARCHAR width for values of up to `max_bytes`: the next power of two, at least 16,
/// at most 65,535, so a column widens rarely and in few steps.
pub fn varchar_size(max_bytes: usize) -> usize {
    max_bytes
        .max(MIN_VARCHAR)
        .checked_next_power_of_two()
        .unwrap_or(MAX_VARCHAR)
        .min(MAX_VARCHAR)
}

/// The Redshift type of a column whose longest value has `max_bytes` bytes (text only).
pub fn column_type(field: &Field, max_bytes: usize) -> Option<String> {
    Some(match Bound::of(field) {
        Bound::Json | Bound::Nested => "SUPER".into(),
        Bound::Text => format!("VARCHAR({})", varchar_size(max_bytes)),
        Bound::Bytes => format!("VARBYTE({MAX_VARBYTE})"),
        Bound::Fixed => fixed_type(field.data_type())?,
    })
}

/// The type COPY reads a lake column into: text at full width (the target is sized after).
pub fn stage_type(field: &Field) -> Option<String> {
    if field.name() == OP {
        return Some(SYSTEM_TYPES.text.into());
    }
    Some(match Bound::of(field) {
        Bound::Text | Bound::Json => format!("VARCHAR({MAX_VARCHAR})"),
        Bound::Bytes => format!("VARBYTE({MAX_VARBYTE})"),
        Bound::Nested => "SUPER".into(),
        Bound::Fixed => fixed_type(field.data_type())?,
    })
}

fn fixed_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INTEGER".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::UInt64 => "DECIMAL(20,0)".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE PRECISION".into(),
        DataType::Decimal128(p, s) if *s >= 0 && *p <= 38 => format!("DECIMAL({p},{s})"),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Time64(_) => "TIME".into(),
        _ => return None,
    })
}

/// A table's layout with every column mapped to its warehouse name and checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableLayout {
    pub diststyle: Option<String>,
    pub distkey: Option<String>,
    pub sortkey: Vec<String>,
    /// An interleaved sort key (else compound).
    pub interleaved: bool,
    pub encode: BTreeMap<String, String>,
}

/// A table's distribution and sort key as Redshift reports them (`pg_class`, `pg_attribute`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CurrentLayout {
    /// even | key | all | auto.
    pub diststyle: String,
    pub distkey: Option<String>,
    pub sortkey: Vec<String>,
    pub interleaved: bool,
}

/// The query reading a table's [`CurrentLayout`] (`$1` schema, `$2` table): one row per
/// column that is the distkey or in the sort key, with the table's distribution style
/// (`reldiststyle`: 0 even, 1 key, 8 all, 10 to 13 auto) on every row, and a row with NULL
/// column when there is neither.
pub const CURRENT_LAYOUT: &str = "SELECT CAST(c.reldiststyle AS INTEGER), CAST(a.attname AS VARCHAR(128)), a.attisdistkey, CAST(a.attsortkeyord AS INTEGER)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND (a.attisdistkey OR a.attsortkeyord <> 0)
 WHERE n.nspname = $1 AND c.relname = $2";

/// One row of [`CURRENT_LAYOUT`]: `(reldiststyle, column, is distkey, sort key position)`.
pub type LayoutRow = (i32, Option<String>, Option<bool>, Option<i32>);

impl CurrentLayout {
    /// From the rows of [`CURRENT_LAYOUT`]; a negative sort key position is an interleaved
    /// sort key's.
    pub fn from_rows(rows: &[LayoutRow]) -> CurrentLayout {
        let diststyle = match rows.first().map(|r| r.0) {
            Some(0) => "even",
            Some(1) => "key",
            Some(8) => "all",
            _ => "auto",
        };
        let mut sort: Vec<(i32, String)> = Vec::new();
        let mut l = CurrentLayout {
            diststyle: diststyle.into(),
            ..CurrentLayout::default()
        };
        for (_, name, dist, ord) in rows {
            let Some(name) = name else { continue };
            if *dist == Some(true) {
                l.distkey = Some(name.clone());
            }
            if let Some(o) = ord.filter(|o| *o != 0) {
                l.interleaved |= o < 0;
                sort.push((o.abs(), name.clone()));
            }
        }
        sort.sort();
        l.sortkey = sort.into_iter().map(|(_, n)| n).collect();
        l
    }
}

/// The statements that take an existing table from its `current` layout to the `wanted`
/// one, and what each changes (for the load's report); Redshift runs them outside a
/// transaction block. A distribution or sort key left unset is left as it is. A change to
/// or from an interleaved sort key cannot be altered in place: the error says so.
pub fn alter_layout(
    target: &str,
    current: &CurrentLayout,
    wanted: &TableLayout,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    match (&wanted.distkey, wanted.diststyle.as_deref()) {
        (Some(k), _) if current.distkey.as_ref() != Some(k) || current.diststyle != "key" => {
            out.push((
                format!("ALTER TABLE {target} ALTER DISTKEY {};", q(k)),
                format!(
                    "distkey {} (was {})",
                    k,
                    current.distkey.as_deref().unwrap_or(&current.diststyle)
                ),
            ));
        }
        (None, Some(style)) if style != "key" && style != current.diststyle => {
            out.push((
                format!(
                    "ALTER TABLE {target} ALTER DISTSTYLE {};",
                    style.to_ascii_uppercase()
                ),
                format!("diststyle {style} (was {})", current.diststyle),
            ));
        }
        _ => {}
    }
    if !wanted.sortkey.is_empty()
        && (wanted.sortkey != current.sortkey || wanted.interleaved != current.interleaved)
    {
        let style = |i: bool| if i { "interleaved" } else { "compound" };
        if wanted.interleaved || current.interleaved {
            return Err(format!(
                "the sort key changed from {} ({}) to {} ({}), and Redshift alters no interleaved sort key in place: recreate the table (drop it and reset its ledger row) or keep its sort key",
                style(current.interleaved),
                current.sortkey.join(", "),
                style(wanted.interleaved),
                wanted.sortkey.join(", ")
            ));
        }
        let keys: Vec<String> = wanted.sortkey.iter().map(|k| q(k)).collect();
        out.push((
            format!(
                "ALTER TABLE {target} ALTER COMPOUND SORTKEY ({});",
                keys.join(", ")
            ),
            format!(
                "sortkey ({}) (was ({}))",
                wanted.sortkey.join(", "),
                current.sortkey.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// The column encodings Redshift documents.
pub const ENCODINGS: &[&str] = &[
    "raw",
    "az64",
    "bytedict",
    "delta",
    "delta32k",
    "lzo",
    "mostly8",
    "mostly16",
    "mostly32",
    "runlength",
    "text255",
    "text32k",
    "zstd",
];

impl TableLayout {
    /// Checks `layout` and maps its columns with `mapped` (source name → warehouse name).
    pub fn resolve(
        layout: &Layout,
        mapped: impl Fn(&str) -> Option<String>,
    ) -> Result<TableLayout, String> {
        let column = |c: &str, what: &str| {
            mapped(c).ok_or_else(|| format!("layout {what} `{c}` is not a column of the table"))
        };
        let diststyle = layout.diststyle.as_deref().map(str::to_ascii_lowercase);
        match (diststyle.as_deref(), &layout.distkey) {
            (None | Some("key"), _) | (Some("auto" | "even" | "all"), None) => {}
            (Some("auto" | "even" | "all"), Some(_)) => {
                return Err("layout distkey needs diststyle = \"key\" (or no diststyle)".into())
            }
            (Some(other), _) => {
                return Err(format!(
                    "layout diststyle `{other}` is not one of auto, even, all, key"
                ))
            }
        }
        if diststyle.as_deref() == Some("key") && layout.distkey.is_none() {
            return Err("layout diststyle = \"key\" needs distkey".into());
        }
        let distkey = layout
            .distkey
            .as_deref()
            .map(|c| column(c, "distkey"))
            .transpose()?;
        let sortkey = layout
            .sortkey
            .iter()
            .map(|c| column(c, "sortkey"))
            .collect::<Result<_, _>>()?;
        let interleaved = match layout.sortkey_style.as_deref() {
            None | Some("compound") => false,
            Some("interleaved") => true,
            Some(other) => {
                return Err(format!(
                    "layout sortkey_style `{other}` is not one of compound, interleaved"
                ))
            }
        };
        let mut encode = BTreeMap::new();
        for (c, e) in &layout.encode {
            let e = e.to_ascii_lowercase();
            if !ENCODINGS.contains(&e.as_str()) {
                return Err(format!(
                    "layout encode for `{c}`: `{e}` is not one of {}",
                    ENCODINGS.join(", ")
                ));
            }
            encode.insert(column(c, "encode column")?, e);
        }
        Ok(TableLayout {
            diststyle: diststyle.or_else(|| distkey.as_ref().map(|_| "key".into())),
            distkey,
            sortkey,
            interleaved,
            encode,
        })
    }
}

/// `CREATE SCHEMA` and `CREATE TABLE` for `target` (`"schema"."table"`) with `columns`
/// (`(name, type and constraints)`) and its layout: per-column encodings when any are
/// configured, else `ENCODE AUTO`; `DISTSTYLE`/`DISTKEY`; a compound or interleaved
/// `SORTKEY`. Without a
/// layout (the PostgreSQL stand-in), a plain `CREATE TABLE`.
pub fn create_table(
    schema: &str,
    target: &str,
    columns: &[(String, String)],
    layout: Option<&TableLayout>,
) -> String {
    let none = TableLayout::default();
    let l = layout.unwrap_or(&none);
    let cols: Vec<String> = columns
        .iter()
        .map(|(n, t)| match l.encode.get(n) {
            Some(e) => format!("  {} {t} ENCODE {}", q(n), e.to_ascii_uppercase()),
            None => format!("  {} {t}", q(n)),
        })
        .collect();
    let mut attributes = Vec::new();
    if let Some(style) = &l.diststyle {
        attributes.push(format!("\nDISTSTYLE {}", style.to_ascii_uppercase()));
    }
    if let Some(k) = &l.distkey {
        attributes.push(format!("\nDISTKEY ({})", q(k)));
    }
    if !l.sortkey.is_empty() {
        let keys: Vec<String> = l.sortkey.iter().map(|k| q(k)).collect();
        let style = if l.interleaved {
            "INTERLEAVED"
        } else {
            "COMPOUND"
        };
        attributes.push(format!("\n{style} SORTKEY ({})", keys.join(", ")));
    }
    if layout.is_some() && l.encode.is_empty() {
        attributes.push("\nENCODE AUTO".into());
    }
    format!(
        "CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE {target} (\n{}\n){};",
        q(schema),
        cols.join(",\n"),
        attributes.concat()
    )
}

/// `ALTER TABLE ... ALTER COLUMN ... TYPE VARCHAR(n)`: Redshift runs it only outside a
/// transaction block, so widening happens before a load's transaction (a wider column is
/// harmless if the load then fails).
pub fn widen(target: &str, column: &str, size: usize) -> String {
    format!(
        "ALTER TABLE {target} ALTER COLUMN {} TYPE VARCHAR({size});",
        q(column)
    )
}

/// The staging table, shaped like the lake's data files (COPY maps Parquet columns by
/// position): `columns` are `(name, staging type)` in file order.
pub fn create_stage(stage: &str, columns: &[(String, String)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(n, t)| format!("{} {t}", q(n)))
        .collect();
    format!(
        "DROP TABLE IF EXISTS {stage};\nCREATE TEMP TABLE {stage} ({});",
        cols.join(", ")
    )
}

/// The files of one schema version into the load's stage: COPY into a stage of their own
/// columns (`columns`, which `copy` fills), then into the load's stage by name; the columns
/// those files lack stay NULL.
pub fn copy_version(
    stage: &str,
    version_stage: &str,
    columns: &[(String, String)],
    copy: &str,
) -> String {
    format!(
        "{}\n{copy}\n{}",
        create_stage(version_stage, columns),
        insert_version(stage, version_stage, columns)
    )
}

/// A version stage's rows into the load's stage, by column name (the columns the version
/// lacks stay NULL), and the version stage dropped.
pub fn insert_version(stage: &str, version_stage: &str, columns: &[(String, String)]) -> String {
    let list: Vec<String> = columns.iter().map(|(n, _)| q(n)).collect();
    let list = list.join(", ");
    format!("INSERT INTO {stage} ({list}) SELECT {list} FROM {version_stage};\nDROP TABLE {version_stage};")
}

/// A string literal, for the few values that are not identifiers (a URL, a role ARN).
/// Redshift treats a backslash in a literal as an escape; rather than escape for one server
/// and differ from the other, such values are refused.
pub fn literal(value: &str) -> Result<String, String> {
    if value.contains(['\\', '\'', '\0']) {
        return Err(format!(
            "`{value}` holds a quote or backslash, which sluice does not put in a Redshift literal"
        ));
    }
    Ok(format!("'{value}'"))
}

/// COPY of the files a manifest lists into the staging table.
/// `nested`: the stage has SUPER columns for the files' lists, structs and maps, which
/// `SERIALIZETOJSON` copies whole.
pub fn copy_manifest(
    stage: &str,
    manifest_url: &str,
    iam_role: &str,
    nested: bool,
) -> Result<String, String> {
    Ok(format!(
        "COPY {stage} FROM {} IAM_ROLE {} FORMAT AS PARQUET{} MANIFEST;",
        literal(manifest_url)?,
        literal(iam_role)?,
        if nested { " SERIALIZETOJSON" } else { "" }
    ))
}

/// A COPY manifest: every file mandatory, with its size (Redshift needs `content_length`
/// for columnar files).
pub fn manifest(files: &[(String, u64)]) -> String {
    // Structs, not JSON maps: the keys keep the order AWS documents whatever map order
    // serde_json is built with.
    #[derive(serde::Serialize)]
    struct Meta {
        content_length: u64,
    }
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        url: &'a str,
        mandatory: bool,
        meta: Meta,
    }
    #[derive(serde::Serialize)]
    struct Manifest<'a> {
        entries: Vec<Entry<'a>>,
    }
    let entries = files
        .iter()
        .map(|(url, size)| Entry {
            url,
            mandatory: true,
            meta: Meta {
                content_length: *size,
            },
        })
        .collect();
    serde_json::to_string_pretty(&Manifest { entries }).expect("JSON of strings and numbers")
}

/// Keeps the staged changes of this load only: the files are whole commits, the load is a
/// range of `_sluice_seq`.
pub fn trim_stage(stage: &str, after: i64, upto: i64) -> String {
    format!(
        "DELETE FROM {stage} WHERE {seq} <= {after} OR {seq} > {upto};",
        seq = q(SEQ)
    )
}

/// The value of [`TRUNCATED`] for a staged row: whether its seq is one of `seqs`.
pub fn truncated_flag(seqs: &[i64]) -> String {
    if seqs.is_empty() {
        return "false".into();
    }
    let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
    format!("{} IN ({})", q(SEQ), list.join(", "))
}

/// The load time as a literal: Redshift's `now()` and `CURRENT_TIMESTAMP` run only on the
/// leader node, so a statement over user tables cannot call them.
pub fn load_time(at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "CAST('{}' AS TIMESTAMPTZ)",
        at.format("%Y-%m-%d %H:%M:%S%.6f+00")
    )
}

/// The ledger move without `ON CONFLICT` (Redshift has none): update the row, insert it
/// when there was none. Parameters: `$1` schema, `$2` table, `$3` source, `$4` source
/// table, `$5` load mode, `$6` lake version, `$7` seq, `$8` changes.
pub fn ledger_upsert(now: &str) -> [String; 2] {
    let key =
        "target_schema = CAST($1 AS VARCHAR(256)) AND target_table = CAST($2 AS VARCHAR(256))";
    [
        format!(
            "UPDATE _sluice.ledger SET source = CAST($3 AS VARCHAR(256)), source_table = CAST($4 AS VARCHAR(256)), load_mode = CAST($5 AS VARCHAR(256)), lake_version = CAST($6 AS BIGINT), lake_seq = CAST($7 AS BIGINT), changes_loaded = changes_loaded + CAST($8 AS BIGINT), loaded_at = {now} WHERE {key}"
        ),
        format!(
            "INSERT INTO _sluice.ledger SELECT CAST($1 AS VARCHAR(256)), CAST($2 AS VARCHAR(256)), CAST($3 AS VARCHAR(256)), CAST($4 AS VARCHAR(256)), CAST($5 AS VARCHAR(256)), CAST($6 AS BIGINT), CAST($7 AS BIGINT), CAST($8 AS BIGINT), {now} WHERE NOT EXISTS (SELECT 1 FROM _sluice.ledger WHERE {key})"
        ),
    ]
}
