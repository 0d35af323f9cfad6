//! Data-quality checks of one table (`[[sources.S.tables.T.checks]]`), as written and as the
//! engine runs them.
//!
//! A row check names what a good row satisfies; a row fails when that is false, the way a SQL
//! `CHECK` constraint does: a NULL value passes every check but `not_null` (and a custom
//! expression that comes out NULL passes). A table check (`row_count`, `freshness`) has no
//! failing rows, so it can warn or halt but not quarantine.

use serde::Deserialize;

/// What a failing check does to the load it guards.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckAction {
    /// Load everything; record and report the failures.
    #[default]
    Warn,
    /// Load the rows that pass; the failing ones go to the quarantine with the check's name.
    Quarantine,
    /// Load the changes before the first failing one, then stop the table (exit 3) until the
    /// source or the check is fixed, or `sluice checks accept` lets them through.
    Halt,
}

impl CheckAction {
    pub fn name(self) -> &'static str {
        match self {
            CheckAction::Warn => "warn",
            CheckAction::Quarantine => "quarantine",
            CheckAction::Halt => "halt",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    NotNull,
    Unique,
    AcceptedValues,
    Range,
    Pattern,
    RowCount,
    Freshness,
    Reference,
    Sql,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::NotNull => "not_null",
            CheckKind::Unique => "unique",
            CheckKind::AcceptedValues => "accepted_values",
            CheckKind::Range => "range",
            CheckKind::Pattern => "pattern",
            CheckKind::RowCount => "row_count",
            CheckKind::Freshness => "freshness",
            CheckKind::Reference => "reference",
            CheckKind::Sql => "sql",
        }
    }
}

/// One `[[...checks]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Names the check in results, the quarantine and alerts; default `<kind>_<column>`.
    pub name: Option<String>,
    pub column: Option<String>,
    /// `unique` over several columns together.
    pub columns: Option<Vec<String>>,
    /// `accepted_values`: the values a row may hold.
    pub values: Option<Vec<toml::Value>>,
    /// `range` (inclusive bounds, numbers or dates/times as text) and `row_count`.
    pub min: Option<toml::Value>,
    pub max: Option<toml::Value>,
    /// `pattern`: a regular expression the value's text must match somewhere (anchor it
    /// with `^…$` for the whole value).
    pub regex: Option<String>,
    /// `freshness`: how old the newest row may be.
    pub max_age_secs: Option<u64>,
    /// `reference`: `source.table.column` whose current values `column` must be among.
    pub to: Option<String>,
    /// `sql`: a predicate over the row's columns (DataFusion SQL) every row satisfies.
    pub expr: Option<String>,
    #[serde(default)]
    pub action: CheckAction,
}

/// A value of `values`, `min` or `max`, as SQL will compare it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Literal {
    Text(String),
    Number(String),
    Bool(bool),
}

impl Literal {
    fn of(v: &toml::Value) -> Option<Literal> {
        match v {
            toml::Value::String(s) => Some(Literal::Text(s.clone())),
            toml::Value::Integer(i) => Some(Literal::Number(i.to_string())),
            toml::Value::Float(f) if f.is_finite() => Some(Literal::Number(f.to_string())),
            toml::Value::Boolean(b) => Some(Literal::Bool(*b)),
            toml::Value::Datetime(d) => Some(Literal::Text(d.to_string())),
            _ => None,
        }
    }

    /// The value as a SQL literal (text quoted, its quotes doubled).
    pub fn sql(&self) -> String {
        match self {
            Literal::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Literal::Number(n) => n.clone(),
            Literal::Bool(b) => b.to_string(),
        }
    }
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Text(s) => write!(f, "{s:?}"),
            Literal::Number(n) => f.write_str(n),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What a check asserts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    NotNull {
        column: String,
    },
    Unique {
        columns: Vec<String>,
    },
    AcceptedValues {
        column: String,
        values: Vec<Literal>,
    },
    Range {
        column: String,
        min: Option<Literal>,
        max: Option<Literal>,
    },
    Pattern {
        column: String,
        regex: String,
    },
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    Freshness {
        /// None: the time each change was landed.
        column: Option<String>,
        max_age_secs: u64,
    },
    Reference {
        column: String,
        source: String,
        table: String,
        to_column: String,
    },
    Sql {
        expr: String,
    },
}

impl Rule {
    /// Whether the rule judges rows (and can quarantine them), not the table as a whole.
    pub fn is_row_check(&self) -> bool {
        !matches!(self, Rule::RowCount { .. } | Rule::Freshness { .. })
    }

    /// The columns of the checked table the rule reads.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Rule::NotNull { column }
            | Rule::AcceptedValues { column, .. }
            | Rule::Range { column, .. }
            | Rule::Pattern { column, .. }
            | Rule::Reference { column, .. } => vec![column.as_str()],
            Rule::Freshness { column, .. } => column.iter().map(|c| c.as_str()).collect(),
            Rule::Unique { columns } => columns.iter().map(|c| c.as_str()).collect(),
            Rule::RowCount { .. } | Rule::Sql { .. } => Vec::new(),
        }
    }

    /// The rule in a few words, for reports.
    pub fn describe(&self) -> String {
        match self {
            Rule::NotNull { column } => format!("{column} is not null"),
            Rule::Unique { columns } => format!("{} is unique", columns.join(", ")),
            Rule::AcceptedValues { column, values } => format!(
                "{column} in ({})",
                values
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Rule::Range { column, min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("{a} <= {column} <= {b}"),
                (Some(a), None) => format!("{column} >= {a}"),
                (None, Some(b)) => format!("{column} <= {b}"),
                (None, None) => column.clone(),
            },
            Rule::Pattern { column, regex } => format!("{column} matches /{regex}/"),
            Rule::RowCount { min, max } => format!(
                "rows per load in [{}, {}]",
                min.map(|m| m.to_string()).unwrap_or_default(),
                max.map(|m| m.to_string()).unwrap_or_default()
            ),
            Rule::Freshness {
                column,
                max_age_secs,
            } => format!(
                "newest {} at most {max_age_secs} s old",
                column.as_deref().unwrap_or("landing")
            ),
            Rule::Reference {
                column,
                source,
                table,
                to_column,
            } => format!("{column} references {source}.{table}.{to_column}"),
            Rule::Sql { expr } => expr.clone(),
        }
    }
}

/// One check as the engine runs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub rule: Rule,
    pub action: CheckAction,
}

/// A problem with one key of a check: (key, message).
pub type CheckError = (&'static str, String);

impl CheckConfig {
    /// The check as the engine runs it, or the first key that is wrong.
    pub fn resolve(&self) -> Result<Check, CheckError> {
        let kind = self.kind;
        let column = || {
            self.column.clone().filter(|c| !c.trim().is_empty()).ok_or((
                "column",
                format!("{} names the column it checks", kind.name()),
            ))
        };
        let literal = |key: &'static str, v: &toml::Value| {
            Literal::of(v).ok_or((key, format!("`{v}` is not a number, text, date or boolean")))
        };
        let count = |key: &'static str, v: &Option<toml::Value>| match v {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(v) => Err((key, format!("`{v}` is not a row count"))),
        };
        let rule = match kind {
            CheckKind::NotNull => Rule::NotNull { column: column()? },
            CheckKind::Unique => match (&self.column, &self.columns) {
                (Some(_), Some(_)) => {
                    return Err(("columns", "set `column` or `columns`, not both".into()))
                }
                (None, Some(cs)) if cs.is_empty() => {
                    return Err(("columns", "lists no column".into()))
                }
                (None, Some(cs)) => Rule::Unique {
                    columns: cs.clone(),
                },
                _ => Rule::Unique {
                    columns: vec![column()?],
                },
            },
            CheckKind::AcceptedValues => {
                let values = self
                    .values
                    .as_ref()
                    .filter(|v| !v.is_empty())
                    .ok_or(("values", "lists the values a row may hold".to_string()))?;
                Rule::AcceptedValues {
                    column: column()?,
                    values: values
                        .iter()
                        .map(|v| literal("values", v))
                        .collect::<Result<_, _>>()?,
                }
            }
            CheckKind::Range => {
                let min = self.min.as_ref().map(|v| literal("min", v)).transpose()?;
                let max = self.max.as_ref().map(|v| literal("max", v)).transpose()?;
                if min.is_none() && max.is_none() {
                    return Err(("min", "range needs `min`, `max` or both".into()));
                }
                Rule::Range {
                    column: column()?,
                    min,
                    max,
                }
            }
            CheckKind::Pattern => {
                let regex = self
                    .regex
                    .clone()
                    .ok_or(("regex", "pattern needs `regex`".to_string()))?;
                if let Err(e) = regex::Regex::new(&regex) {
                    return Err(("regex", format!("not a regular expression: {e}")));
                }
                Rule::Pattern {
                    column: column()?,
                    regex,
                }
            }
            CheckKind::RowCount => {
                let (min, max) = (count("min", &self.min)?, count("max", &self.max)?);
                match (min, max) {
                    (None, None) => {
                        return Err(("min", "row_count needs `min`, `max` or both".into()))
                    }
                    (Some(a), Some(b)) if a > b => {
                        return Err(("max", format!("{b} is below min = {a}")))
                    }
                    _ => Rule::RowCount { min, max },
                }
            }
            CheckKind::Freshness => Rule::Freshness {
                column: self.column.clone(),
                max_age_secs: self.max_age_secs.filter(|s| *s > 0).ok_or((
                    "max_age_secs",
                    "freshness needs max_age_secs >= 1".to_string(),
                ))?,
            },
            CheckKind::Reference => {
                let to = self.to.as_deref().ok_or((
                    "to",
                    "reference needs `to = \"source.table.column\"`".to_string(),
                ))?;
                let parts: Vec<&str> = to.split('.').collect();
                let [source, table, to_column] = parts[..] else {
                    return Err(("to", format!("`{to}` is not source.table.column")));
                };
                if parts.iter().any(|p| p.is_empty()) {
                    return Err(("to", format!("`{to}` is not source.table.column")));
                }
                Rule::Reference {
                    column: column()?,
                    source: source.into(),
                    table: table.into(),
                    to_column: to_column.into(),
                }
            }
            CheckKind::Sql => Rule::Sql {
                expr: self.expr.clone().filter(|e| !e.trim().is_empty()).ok_or((
                    "expr",
                    "sql needs `expr`, a predicate every row satisfies".to_string(),
                ))?,
            },
        };
        self.refuse_unused(kind)?;
        match (self.action, rule.is_row_check()) {
            (CheckAction::Quarantine, false) => {
                return Err((
                    "action",
                    format!(
                    "{} judges the table, not rows: there is nothing to quarantine (warn or halt)",
                    kind.name()
                ),
                ))
            }
            (CheckAction::Halt, _) if kind == CheckKind::Freshness => {
                return Err((
                    "action",
                    "a stale table gets no fresher by not loading: freshness warns".into(),
                ))
            }
            _ => {}
        }
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| match rule.columns().is_empty() {
                true => kind.name().to_string(),
                false => format!("{}_{}", kind.name(), rule.columns().join("_")),
            });
        if name.trim().is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        Ok(Check {
            name,
            rule,
            action: self.action,
        })
    }

    /// A key this kind does not read is a mistake, not a no-op.
    fn refuse_unused(&self, kind: CheckKind) -> Result<(), CheckError> {
        use CheckKind::*;
        let set: [(&'static str, bool, &[CheckKind]); 8] = [
            (
                "column",
                self.column.is_some(),
                &[
                    NotNull,
                    Unique,
                    AcceptedValues,
                    Range,
                    Pattern,
                    Freshness,
                    Reference,
                ],
            ),
            ("columns", self.columns.is_some(), &[Unique]),
            ("values", self.values.is_some(), &[AcceptedValues]),
            ("min", self.min.is_some(), &[Range, RowCount]),
            ("max", self.max.is_some(), &[Range, RowCount]),
            ("regex", self.regex.is_some(), &[Pattern]),
            ("max_age_secs", self.max_age_secs.is_some(), &[Freshness]),
            ("to", self.to.is_some(), &[Reference]),
        ];
        for (key, given, kinds) in set {
            if given && !kinds.contains(&kind) {
                return Err((key, format!("{} does not take `{key}`", kind.name())));
            }
        }
        if self.expr.is_some() && kind != Sql {
            return Err(("expr", format!("{} does not take `expr`", kind.name())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Check, CheckError> {
        toml::from_str::<CheckConfig>(text)
            .expect("parses")
            .resolve()
    }

    #[test]
    fn each_kind_resolves_with_a_default_name() {
        let c = parse("kind = \"not_null\"\ncolumn = \"customer_id\"\naction = \"quarantine\"")
            .unwrap();
        assert_eq!(c.name, "not_null_customer_id");
        assert_eq!(c.action, CheckAction::Quarantine);
        let c = parse("kind = \"unique\"\ncolumns = [\"a\", \"b\"]").unwrap();
        assert_eq!(c.name, "unique_a_b");
        assert_eq!(c.action, CheckAction::Warn);
        let c = parse("kind = \"range\"\ncolumn = \"amount\"\nmin = 0\nmax = 10.5").unwrap();
        assert_eq!(
            c.rule,
            Rule::Range {
                column: "amount".into(),
                min: Some(Literal::Number("0".into())),
                max: Some(Literal::Number("10.5".into()))
            }
        );
        let c =
            parse("kind = \"reference\"\ncolumn = \"cid\"\nto = \"shop.customers.id\"").unwrap();
        assert_eq!(
            c.rule,
            Rule::Reference {
                column: "cid".into(),
                source: "shop".into(),
                table: "customers".into(),
                to_column: "id".into()
            }
        );
        let c = parse("kind = \"row_count\"\nmin = 1\nname = \"not_empty\"\naction = \"halt\"")
            .unwrap();
        assert_eq!(c.name, "not_empty");
        assert_eq!(
            c.rule,
            Rule::RowCount {
                min: Some(1),
                max: None
            }
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("kind = \"not_null\"", "column"),
            ("kind = \"pattern\"\ncolumn = \"a\"\nregex = \"(\"", "regex"),
            (
                "kind = \"accepted_values\"\ncolumn = \"a\"\nvalues = []",
                "values",
            ),
            ("kind = \"range\"\ncolumn = \"a\"", "min"),
            ("kind = \"not_null\"\ncolumn = \"a\"\nmin = 1", "min"),
            (
                "kind = \"row_count\"\nmin = 1\naction = \"quarantine\"",
                "action",
            ),
            (
                "kind = \"freshness\"\nmax_age_secs = 60\naction = \"halt\"",
                "action",
            ),
            (
                "kind = \"reference\"\ncolumn = \"a\"\nto = \"shop.customers\"",
                "to",
            ),
            ("kind = \"row_count\"\nmin = 5\nmax = 1", "max"),
            ("kind = \"sql\"\nexpr = \" \"", "expr"),
        ];
        for (text, key) in cases {
            assert_eq!(parse(text).unwrap_err().0, key, "{text}");
        }
    }

    #[test]
    fn literals_are_quoted_for_sql() {
        assert_eq!(Literal::Text("it's".into()).sql(), "'it''s'");
        assert_eq!(Literal::Number("-3".into()).sql(), "-3");
        assert_eq!(Literal::Bool(true).sql(), "true");
    }
}
