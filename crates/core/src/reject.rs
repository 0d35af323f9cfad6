//! A record that could not be read: it goes to the quarantine table with enough context for a
//! person to find and fix it (file, line, raw text, reason). Never dropped silently.

/// One rejected input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Where it came from (file path or URL).
    pub file: String,
    /// 1-based line (delimited text, JSON lines) or record number (JSON arrays, Parquet row).
    pub line: u64,
    /// The column it failed on, when one is to blame.
    pub column: Option<String>,
    /// The raw text of the record (invalid UTF-8 shown with replacement characters).
    pub raw: String,
    /// Why it was rejected.
    pub reason: String,
}
