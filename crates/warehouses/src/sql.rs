//! The load statements every SQL warehouse shares. A load stages its change rows in a table;
//! these statements apply the staged changes to the target by its mode. They are written in
//! the SQL that DuckDB, PostgreSQL and Redshift all accept (`DELETE ... USING`, `UPDATE ...
//! FROM`, window functions, `CREATE TEMP TABLE ... AS`), so one text serves every warehouse and
//! every identifier in it arrives quoted.

use sluice_core::change::{
    DELETED, INGESTED_AT, IS_CURRENT, LOADED_AT, OP, ROW_ID, SEQ, SOURCE_TS, VALID_FROM, VALID_TO,
};
use sluice_core::config::{Deletes, LoadMode};
use sluice_core::names::quote_ident as q;

/// The ledger: per warehouse table, how far it is loaded. Moved in each load's transaction.
pub const LEDGER_DDL: &str = "CREATE SCHEMA IF NOT EXISTS _sluice;
CREATE TABLE IF NOT EXISTS _sluice.ledger (
    target_schema TEXT NOT NULL, target_table TEXT NOT NULL,
    source TEXT NOT NULL, source_table TEXT NOT NULL, load_mode TEXT NOT NULL,
    lake_version BIGINT NOT NULL, lake_seq BIGINT NOT NULL,
    changes_loaded BIGINT NOT NULL, loaded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (target_schema, target_table));";

/// Every ledger row, in the column order of [`crate::LedgerRow`] (schema, table, source,
/// source table, mode, seq).
pub const LEDGER_ROWS: &str = "SELECT target_schema, target_table, source, source_table, load_mode, lake_seq FROM _sluice.ledger ORDER BY 1, 2";

/// The SQL type names a warehouse uses for the columns sluice adds.
pub struct SystemTypes {
    pub text: &'static str,
    /// For [`ROW_ID`]: 32 hex digits.
    pub row_id: &'static str,
    pub bigint: &'static str,
    pub timestamptz: &'static str,
    pub boolean: &'static str,
}

/// The columns sluice adds to a target table after the source columns, by load mode:
/// `(name, type and constraint)`. A merge table without a key (`keyless`) holds each row's
/// identity.
pub fn system_columns(
    mode: LoadMode,
    deletes: Deletes,
    keyless: bool,
    t: &SystemTypes,
) -> Vec<(String, String)> {
    let mut cols = Vec::new();
    let mut add = |name: &str, ty: String| cols.push((name.to_string(), ty));
    if mode == LoadMode::Merge && keyless {
        add(ROW_ID, format!("{} NOT NULL", t.row_id));
    }
    match mode {
        LoadMode::Append => {
            add(OP, format!("{} NOT NULL", t.text));
            add(SEQ, format!("{} NOT NULL", t.bigint));
        }
        LoadMode::History => {
            add(VALID_FROM, format!("{} NOT NULL", t.timestamptz));
            add(VALID_TO, t.timestamptz.into());
            add(IS_CURRENT, format!("{} NOT NULL", t.boolean));
            add(SEQ, format!("{} NOT NULL", t.bigint));
        }
        LoadMode::Merge | LoadMode::Replace => {}
    }
    add(SOURCE_TS, t.timestamptz.into());
    add(LOADED_AT, format!("{} NOT NULL", t.timestamptz));
    if mode == LoadMode::Merge && deletes == Deletes::Soft {
        add(DELETED, format!("{} NOT NULL DEFAULT false", t.boolean));
    }
    cols
}

/// The source columns a target table lacks (a column the source gained), in lake order.
pub fn missing_columns<'a>(
    existing: &[String],
    wanted: &'a [(String, String)],
) -> Vec<&'a (String, String)> {
    wanted
        .iter()
        .filter(|(name, _)| !existing.iter().any(|e| e == name))
        .collect()
}

/// The alias of the staging table in generated SQL. Every alias and helper name sluice
/// generates starts with `_sluice`, which no warehouse table, schema or column may (see
/// `sluice_core::names::is_reserved`), so none can clash with a user's name.
const STAGED: &str = "_sluice_s";

/// A query giving the count of the changes in `stage` (a table or parenthesized query) and
/// whether some key repeats among them, in one pass over the key columns. When none repeats,
/// each change is its key's latest, and [`Apply::merge_unique`] does what [`Apply::merge`]
/// does without ranking every key's changes (a sort of the whole stage, the most of a large
/// first load's time).
pub fn count_and_keys_repeat(stage: &str, keys: &[String]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| q(k)).collect();
    format!(
        "SELECT CAST(coalesce(sum(n), 0) AS BIGINT), coalesce(bool_or(n > 1), false) FROM (SELECT count(*) AS n FROM {stage} GROUP BY {})",
        keys.join(", ")
    )
}

/// One load's tables and columns, every name already mapped (not yet quoted).
pub struct Apply<'a> {
    /// `"schema"."table"`, quoted.
    pub target: &'a str,
    /// The staging table, quoted: every change row with the change columns.
    pub stage: &'a str,
    /// A scratch table name for history, quoted.
    pub work: &'a str,
    pub keys: &'a [String],
    pub columns: &'a [String],
    /// The load time: `now()`, or a literal where the server has no such function on its
    /// compute nodes (Redshift).
    pub now: &'a str,
    /// What each of `columns` is loaded from, when not the staged column of the same name
    /// (e.g. `JSON_PARSE("doc")` for a SUPER column); empty: the staged columns.
    pub values: &'a [String],
    /// Further target columns, each with its value over a staged row (Redshift's
    /// `_sluice_truncated`).
    pub extra: &'a [(String, String)],
}

impl Apply<'_> {
    /// The target columns a load writes from staged rows: the source columns and `extra`.
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| q(c))
            .chain(self.extra.iter().map(|(c, _)| q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The values of [`Apply::column_list`] over a staged row.
    fn value_list(&self) -> String {
        let values: Vec<String> = if self.values.is_empty() {
            self.columns.iter().map(|c| q(c)).collect()
        } else {
            self.values.to_vec()
        };
        values
            .into_iter()
            .chain(self.extra.iter().map(|(_, v)| v.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_list(&self, alias: &str) -> String {
        self.keys
            .iter()
            .map(|k| format!("{alias}{}", q(k)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a.k1 = b.k1 AND a.k2 = b.k2`.
    fn key_match(&self, a: &str, b: &str) -> String {
        self.keys
            .iter()
            .map(|k| format!("{a}.{k} = {b}.{k}", k = q(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The latest staged change per key (by `_sluice_seq`), deletes included.
    fn latest(&self) -> String {
        format!(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {} DESC) AS \"_sluice_rn\" FROM {}) AS _sluice_l WHERE \"_sluice_rn\" = 1",
            self.key_list(""),
            q(SEQ),
            self.stage
        )
    }

    /// Merge: remove the target rows of every staged key, then insert each key's latest
    /// change unless it is a delete (soft deletes: insert it flagged). Without a key, rows
    /// are matched on their identity ([`Apply::merge_rows`]).
    pub fn merge(&self, deletes: Deletes) -> String {
        if self.keys.is_empty() {
            return self.merge_rows();
        }
        self.merge_from(deletes, &format!("({})", self.latest()))
    }

    /// [`Apply::merge`] of staged changes whose keys are all distinct. `target_empty`: the
    /// target holds no row (created by this load, or emptied for an image), so there is
    /// nothing to remove first.
    pub fn merge_unique(&self, deletes: Deletes, target_empty: bool) -> String {
        let insert = self.insert_latest(deletes, self.stage);
        match target_empty {
            true => format!("{insert};"),
            false => format!("{};\n{insert};", self.delete_staged_keys()),
        }
    }

    /// Merge of `latest`: a table or parenthesized query with each staged key's latest change.
    fn merge_from(&self, deletes: Deletes, latest: &str) -> String {
        format!(
            "{};\n{};",
            self.delete_staged_keys(),
            self.insert_latest(deletes, latest)
        )
    }

    /// Removes the target rows of every staged key.
    fn delete_staged_keys(&self) -> String {
        format!(
            "DELETE FROM {t} USING {s} AS {a} WHERE {on}",
            t = self.target,
            s = self.stage,
            a = STAGED,
            on = self.key_match(self.target, STAGED)
        )
    }

    /// Inserts each of `latest`'s changes unless it is a delete (soft deletes: flagged).
    fn insert_latest(&self, deletes: Deletes, latest: &str) -> String {
        let (cols, vals, now) = (self.column_list(), self.value_list(), self.now);
        match deletes {
            Deletes::Soft => format!(
                "INSERT INTO {t} ({cols}, {ts}, {la}, {del}) SELECT {vals}, {ts}, {now}, {op} = 'd' FROM {latest} AS _sluice_m",
                t = self.target,
                ts = q(SOURCE_TS),
                la = q(LOADED_AT),
                del = q(DELETED),
                op = q(OP),
            ),
            Deletes::Hard => format!(
                "INSERT INTO {t} ({cols}, {ts}, {la}) SELECT {vals}, {ts}, {now} FROM {latest} AS _sluice_m WHERE {op} <> 'd'",
                t = self.target,
                ts = q(SOURCE_TS),
                la = q(LOADED_AT),
                op = q(OP),
            ),
        }
    }

    /// Merge without a key (DESIGN.md, Keys): the table holds each row as often as the source
    /// does, matched on `_sluice_row_id`. A staged read, insert or update adds a row; a
    /// delete removes one (an update arrives as the delete of its before image and the
    /// after image). Rows of an identity nothing deletes are inserted as staged. For an
    /// identity something deletes, its rows in the table and its staged rows are ranked
    /// (the table's first, keeping their load times), all are removed, and as many come
    /// back as are left after the deletes. No row identifier is needed, so the same text
    /// serves every warehouse.
    pub fn merge_rows(&self) -> String {
        let (cols, vals, now) = (self.column_list(), self.value_list(), self.now);
        let (t, s, work) = (self.target, self.stage, self.work);
        let deleted = format!(
            "SELECT {id} FROM {s} WHERE {op} = 'd'",
            id = q(ROW_ID),
            op = q(OP)
        );
        format!(
            "CREATE TEMP TABLE {work} AS
SELECT _sluice_u.*, row_number() OVER (PARTITION BY {id} ORDER BY \"_sluice_o\", {seq}) AS \"_sluice_rn\",
       count(*) OVER (PARTITION BY {id}) AS \"_sluice_n\"
FROM (
  SELECT {cols}, {id}, {ts}, {la}, 0 AS \"_sluice_o\", CAST(0 AS BIGINT) AS {seq} FROM {t} WHERE {id} IN ({deleted})
  UNION ALL
  SELECT {vals}, {id}, {ts}, {now}, 1, {seq} FROM {s} WHERE {op} <> 'd' AND {id} IN ({deleted})
) AS _sluice_u;
DELETE FROM {t} WHERE {id} IN ({deleted});
INSERT INTO {t} ({cols}, {id}, {ts}, {la})
SELECT {cols}, _sluice_w.{id}, {ts}, {la} FROM {work} AS _sluice_w
JOIN (SELECT {id}, count(*) AS \"_sluice_d\" FROM {s} WHERE {op} = 'd' GROUP BY {id}) AS _sluice_d
  ON _sluice_d.{id} = _sluice_w.{id}
WHERE _sluice_w.\"_sluice_rn\" <= _sluice_w.\"_sluice_n\" - _sluice_d.\"_sluice_d\";
INSERT INTO {t} ({cols}, {id}, {ts}, {la})
SELECT {vals}, {id}, {ts}, {now} FROM {s} WHERE {op} <> 'd' AND {id} NOT IN ({deleted});
DROP TABLE {work};",
            id = q(ROW_ID),
            seq = q(SEQ),
            ts = q(SOURCE_TS),
            la = q(LOADED_AT),
            op = q(OP),
        )
    }

    /// Inserts every staged change as a row, as merge would when the target holds none of
    /// the keys and no key repeats (the caller makes sure, e.g. with a unique index).
    pub fn insert_all(&self) -> String {
        let (cols, vals, now) = (self.column_list(), self.value_list(), self.now);
        format!(
            "INSERT INTO {t} ({cols}, {ts}, {la}) SELECT {vals}, {ts}, {now} FROM {s};",
            t = self.target,
            s = self.stage,
            ts = q(SOURCE_TS),
            la = q(LOADED_AT),
        )
    }

    /// Replace: the target becomes the staged rows (the latest per key when keyed).
    /// Append: every staged change becomes a row, with its op and seq.
    pub fn append(&self) -> String {
        let (cols, vals, now) = (self.column_list(), self.value_list(), self.now);
        format!(
            "INSERT INTO {t} ({cols}, {op}, {seq}, {ts}, {la}) SELECT {vals}, {op}, {seq}, {ts}, {now} FROM {s};",
            t = self.target,
            s = self.stage,
            op = q(OP),
            seq = q(SEQ),
            ts = q(SOURCE_TS),
            la = q(LOADED_AT),
        )
    }

    pub fn replace(&self) -> String {
        let (cols, vals, now) = (self.column_list(), self.value_list(), self.now);
        let rows = if self.keys.is_empty() {
            format!(
                "SELECT * FROM {} AS _sluice_m WHERE {} <> 'd'",
                self.stage,
                q(OP)
            )
        } else {
            format!(
                "SELECT * FROM ({}) AS _sluice_m WHERE {} <> 'd'",
                self.latest(),
                q(OP)
            )
        };
        format!(
            "DELETE FROM {t};\nINSERT INTO {t} ({cols}, {ts}, {la}) SELECT {vals}, {ts}, {now} FROM ({rows}) AS _sluice_r;",
            t = self.target,
            ts = q(SOURCE_TS),
            la = q(LOADED_AT),
        )
    }

    /// History (SCD2): every staged change of a key becomes a version in `_sluice_seq`
    /// order. A version is valid from its change's source commit time until the next change
    /// of its key (a delete only closes). Times are made monotonic per key (a running max,
    /// and never before the key's last recorded time), so one key's intervals never overlap
    /// even when commit clocks step back; `[t, t)` is possible when two changes share a
    /// timestamp (MariaDB's binlog has second precision).
    pub fn history(&self) -> String {
        let (cols, vals, now) = (self.column_list(), self.value_list(), self.now);
        let work = self.work;
        let t = self.target;
        let s = self.stage;
        let (vf, vt, cur) = (q(VALID_FROM), q(VALID_TO), q(IS_CURRENT));
        let seq = q(SEQ);
        format!(
            "CREATE TEMP TABLE {work} AS
SELECT _sluice_v.*, lead(_sluice_v.\"_sluice_vf\") OVER (PARTITION BY {vkeys} ORDER BY _sluice_v.{seq}) AS \"_sluice_vt\"
FROM (
  SELECT _sluice_r.*, CASE WHEN _sluice_p.\"_sluice_last\" IS NOT NULL AND _sluice_p.\"_sluice_last\" > _sluice_r.\"_sluice_t\" THEN _sluice_p.\"_sluice_last\" ELSE _sluice_r.\"_sluice_t\" END AS \"_sluice_vf\"
  FROM (
    SELECT _sluice_s.*, max(COALESCE(_sluice_s.{ts}, _sluice_s.{ing})) OVER (PARTITION BY {skeys} ORDER BY _sluice_s.{seq} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS \"_sluice_t\"
    FROM {s} AS _sluice_s
  ) AS _sluice_r
  LEFT JOIN (
    SELECT {hkeys}, max(COALESCE(_sluice_h.{vt}, _sluice_h.{vf})) AS \"_sluice_last\"
    FROM {t} AS _sluice_h
    WHERE EXISTS (SELECT 1 FROM {s} AS _sluice_k WHERE {hk})
    GROUP BY {hkeys}
  ) AS _sluice_p ON {pr}
) AS _sluice_v;
UPDATE {t} SET {vt} = _sluice_f.\"_sluice_vf\", {cur} = false
FROM (SELECT {keys}, min(\"_sluice_vf\") AS \"_sluice_vf\" FROM {work} GROUP BY {keys}) AS _sluice_f
WHERE {tf} AND {t}.{cur};
INSERT INTO {t} ({cols}, {vf}, {vt}, {cur}, {seq}, {ts}, {la})
SELECT {vals}, \"_sluice_vf\", \"_sluice_vt\", \"_sluice_vt\" IS NULL, {seq}, {ts}, {now} FROM {work} AS _sluice_w WHERE {op} <> 'd';
DROP TABLE {work};",
            vkeys = self.key_list("_sluice_v."),
            skeys = self.key_list("_sluice_s."),
            hkeys = self.key_list("_sluice_h."),
            keys = self.key_list(""),
            hk = self.key_match("_sluice_h", "_sluice_k"),
            pr = self.key_match("_sluice_p", "_sluice_r"),
            tf = self.key_match(t, "_sluice_f"),
            ts = q(SOURCE_TS),
            ing = q(INGESTED_AT),
            la = q(LOADED_AT),
            op = q(OP),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_identifier() {
        let keys = vec!["Id".to_string()];
        let cols = vec!["Id".to_string(), "we\"ird".to_string()];
        let a = Apply {
            target: "\"s\".\"t\"",
            stage: "\"stage\"",
            work: "\"work\"",
            keys: &keys,
            columns: &cols,
            now: "now()",
            values: &[],
            extra: &[],
        };
        let merge = a.merge(Deletes::Hard);
        assert!(
            merge.contains("\"s\".\"t\".\"Id\" = _sluice_s.\"Id\""),
            "{merge}"
        );
        assert!(merge.contains("\"we\"\"ird\""), "{merge}");
        let history = a.history();
        assert!(
            history.contains("PARTITION BY _sluice_v.\"Id\""),
            "{history}"
        );
        assert!(!history.contains(" Id "), "{history}");
    }

    #[test]
    fn system_columns_by_mode() {
        let t = SystemTypes {
            text: "TEXT",
            row_id: "TEXT",
            bigint: "BIGINT",
            timestamptz: "TIMESTAMPTZ",
            boolean: "BOOLEAN",
        };
        let names = |m, d| {
            system_columns(m, d, false, &t)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(LoadMode::Merge, Deletes::Soft),
            [SOURCE_TS, LOADED_AT, DELETED]
        );
        assert_eq!(
            names(LoadMode::History, Deletes::Hard),
            [VALID_FROM, VALID_TO, IS_CURRENT, SEQ, SOURCE_TS, LOADED_AT]
        );
        assert_eq!(
            names(LoadMode::Append, Deletes::Hard),
            [OP, SEQ, SOURCE_TS, LOADED_AT]
        );
    }
}
