//! Text to typed values, in one place for every text-based format (CSV fields, JSON scalars),
//! and type inference over samples with widening:
//!
//! ```text
//!   bool      int64 ──► decimal(p,s) ──► double ──► text
//!   date ──► timestamp          timestamptz ─────────► text
//! ```
//!
//! Parsing never rounds: a decimal with more fractional digits than its column's scale, or an
//! integer that overflows, is an error (the record is quarantined), never a silent change.

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};

use sluice_core::types::MAX_DECIMAL_PRECISION;

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Parses `[+-]digits[.digits]` into an i128 with exactly `scale` fractional digits.
pub fn parse_decimal(s: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{s}` is not a decimal number"));
    }
    let scale = scale.max(0) as usize;
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > scale {
        return Err(format!(
            "`{s}` has more than {scale} decimal places (would round)"
        ));
    }
    let int = int.trim_start_matches('0');
    if int.len() + scale > precision as usize {
        return Err(format!("`{s}` does not fit decimal({precision},{scale})"));
    }
    let mut v: i128 = 0;
    for b in int
        .bytes()
        .chain(frac.bytes().chain(std::iter::repeat(b'0')).take(scale))
    {
        v = v * 10 + (b - b'0') as i128;
    }
    Ok(if neg { -v } else { v })
}

/// `YYYY-MM-DD` to days since 1970-01-01.
pub fn parse_date(s: &str) -> Result<i32, String> {
    let s = s.trim();
    let b = s.as_bytes();
    // Fast path for the canonical form; chrono for anything else it accepts.
    let d = if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
        match (num(0..4), num(5..7), num(8..10)) {
            (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y as i32, m, d),
            _ => None,
        }
    } else {
        None
    };
    let d = d.ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD)"))?;
    Ok(d.to_epoch_days_from_ce())
}

trait EpochDays {
    fn to_epoch_days_from_ce(&self) -> i32;
}

impl EpochDays for NaiveDate {
    fn to_epoch_days_from_ce(&self) -> i32 {
        chrono::Datelike::num_days_from_ce(self) - EPOCH_DAYS_FROM_CE
    }
}

/// A timestamp without zone (`YYYY-MM-DD[ T]HH:MM:SS[.ffffff]`) to microseconds.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(days) = parse_date(s) {
        return Ok(days as i64 * 86_400_000_000);
    }
    Err(format!(
        "`{s}` is not a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])"
    ))
}

/// A timestamp with zone or offset (RFC 3339, or `... +02:00`) to UTC microseconds.
pub fn parse_timestamptz(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.timestamp_micros());
        }
    }
    if let Some(naive) = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')) {
        return parse_timestamp(naive);
    }
    Err(format!("`{s}` is not a timestamp with zone (RFC 3339)"))
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" => Ok(true),
        "false" | "f" => Ok(false),
        _ => Err(format!("`{s}` is not a boolean (true/false)")),
    }
}

pub fn parse_int(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|e| format!("`{s}` is not a 64-bit integer ({e})"))
}

/// What inference saw of one column, and what it concluded.
#[derive(Debug, Clone)]
pub struct ColumnEvidence {
    pub values: usize,
    pub nulls: usize,
    /// One value that ruled out a narrower type, for the report (`"12.5" ruled out bigint`).
    pub widened_by: Option<String>,
}

/// Type inference over sampled text values of one column.
#[derive(Debug, Clone)]
pub struct Inference {
    bool_ok: bool,
    int_ok: bool,
    dec_ok: bool,
    float_ok: bool,
    date_ok: bool,
    ts_ok: bool,
    tstz_ok: bool,
    /// JSON objects or arrays seen: any makes the column JSON text.
    nested_values: usize,
    /// A JSON string was seen: numbers-as-JSON and strings cannot share a numeric column.
    quoted: bool,
    unquoted_number: bool,
    max_int_digits: usize,
    max_scale: usize,
    /// Values whose type the document said (BSON), and the type they meet in (Utf8 when
    /// they have none).
    typed_values: usize,
    typed: Option<DataType>,
    pub evidence: ColumnEvidence,
}

impl Default for Inference {
    fn default() -> Self {
        Inference {
            bool_ok: true,
            int_ok: true,
            dec_ok: true,
            float_ok: true,
            date_ok: true,
            ts_ok: true,
            tstz_ok: true,
            nested_values: 0,
            quoted: false,
            unquoted_number: false,
            max_int_digits: 0,
            max_scale: 0,
            typed_values: 0,
            typed: None,
            evidence: ColumnEvidence {
                values: 0,
                nulls: 0,
                widened_by: None,
            },
        }
    }
}

impl Inference {
    pub fn observe_null(&mut self) {
        self.evidence.nulls += 1;
    }

    /// A JSON object or array.
    pub fn observe_nested(&mut self) {
        self.evidence.values += 1;
        self.nested_values += 1;
    }

    /// A value of a type its document states (BSON's Int64, Double, Date…): typed values meet
    /// in their common type; typed and untyped values in one column are a conflict (text).
    pub fn observe_typed(&mut self, t: &DataType) {
        self.evidence.values += 1;
        self.typed_values += 1;
        let met = match &self.typed {
            None => t.clone(),
            Some(old) => typed_meet(old, t),
        };
        if self.typed.as_ref().is_some_and(|old| *old != met) && self.evidence.widened_by.is_none()
        {
            self.evidence.widened_by = Some(sluice_core::schema::type_name(t));
        }
        self.typed = Some(met);
    }

    /// Values of stated types, and others (text, objects) seen in the same column.
    fn mixed_typed(&self) -> bool {
        self.typed_values > 0 && self.typed_values < self.evidence.values
    }

    /// A JSON string (never a number, whatever it looks like).
    pub fn observe_json_string(&mut self, s: &str) {
        self.quoted = true;
        self.observe_with(s, false);
    }

    /// A JSON number (never a date), or a JSON boolean.
    pub fn observe_json_scalar(&mut self, s: &str) {
        self.unquoted_number = true;
        self.date_ok = false;
        self.ts_ok = false;
        self.tstz_ok = false;
        self.observe_with(s, true);
    }

    /// A field of delimited text.
    pub fn observe_text(&mut self, s: &str) {
        self.observe_with(s, true);
    }

    fn observe_with(&mut self, s: &str, numeric_allowed: bool) {
        self.evidence.values += 1;
        let before = self.candidates();
        let t = s.trim();
        if self.bool_ok && parse_bool(t).is_err() {
            self.bool_ok = false;
        }
        if !numeric_allowed {
            self.int_ok = false;
            self.dec_ok = false;
            self.float_ok = false;
        }
        if self.int_ok && parse_int(t).is_err() {
            self.int_ok = false;
        }
        if self.dec_ok {
            match decimal_shape(t) {
                Some((int_digits, scale)) => {
                    self.max_int_digits = self.max_int_digits.max(int_digits);
                    self.max_scale = self.max_scale.max(scale);
                    if self.max_int_digits + self.max_scale > MAX_DECIMAL_PRECISION as usize {
                        self.dec_ok = false;
                    }
                }
                None => self.dec_ok = false,
            }
        }
        if self.float_ok
            && (t.parse::<f64>().is_err()
                || t.chars()
                    .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E'))
        {
            self.float_ok = false;
        }
        if self.date_ok && parse_date(t).is_err() {
            self.date_ok = false;
        }
        if self.ts_ok && parse_timestamp(t).is_err() {
            self.ts_ok = false;
        }
        if self.tstz_ok && (parse_timestamptz(t).is_err() || parse_timestamp(t).is_ok()) {
            self.tstz_ok = false;
        }
        if self.evidence.widened_by.is_none()
            && self.evidence.values > 1
            && self.candidates() != before
        {
            self.evidence.widened_by = Some(s.chars().take(40).collect());
        }
    }

    /// Takes in what `other` saw (another file's sample of the same column), as if its values
    /// had been observed here.
    pub fn merge(&mut self, other: &Inference) {
        self.bool_ok &= other.bool_ok;
        self.int_ok &= other.int_ok;
        self.dec_ok &= other.dec_ok;
        self.float_ok &= other.float_ok;
        self.date_ok &= other.date_ok;
        self.ts_ok &= other.ts_ok;
        self.tstz_ok &= other.tstz_ok;
        self.nested_values += other.nested_values;
        self.quoted |= other.quoted;
        self.unquoted_number |= other.unquoted_number;
        self.max_int_digits = self.max_int_digits.max(other.max_int_digits);
        self.max_scale = self.max_scale.max(other.max_scale);
        if self.dec_ok && self.max_int_digits + self.max_scale > MAX_DECIMAL_PRECISION as usize {
            self.dec_ok = false;
        }
        self.typed_values += other.typed_values;
        self.typed = match (self.typed.take(), &other.typed) {
            (Some(a), Some(b)) => Some(typed_meet(&a, b)),
            (a, b) => a.or_else(|| b.clone()),
        };
        self.evidence.values += other.evidence.values;
        self.evidence.nulls += other.evidence.nulls;
        if self.evidence.widened_by.is_none() {
            self.evidence.widened_by = other.evidence.widened_by.clone();
        }
    }

    fn candidates(&self) -> [bool; 7] {
        [
            self.bool_ok,
            self.int_ok,
            self.dec_ok,
            self.float_ok,
            self.date_ok,
            self.ts_ok,
            self.tstz_ok,
        ]
    }

    /// Every value seen was a JSON object or array: a JSON column.
    pub fn holds_json(&self) -> bool {
        self.nested_values > 0 && self.nested_values == self.evidence.values
    }

    /// Documents disagree on what the field is: a JSON string in some and a number or boolean
    /// in others, or an object/array in some and a scalar in others. The column is text.
    pub fn conflicting_kinds(&self) -> bool {
        self.mixed_typed()
            || (self.quoted && self.unquoted_number)
            || (self.nested_values > 0 && self.nested_values < self.evidence.values)
    }

    /// Whether every observed value parses as `t` (a table's existing column type): a later
    /// file is held against the table's type, not against its own narrowest one, so a file of
    /// all-integers in a decimal column is no change.
    pub fn parses_as(&self, t: &DataType) -> bool {
        if self.evidence.values == 0 {
            return true;
        }
        if let Some(typed) = self.typed.as_ref().filter(|_| !self.mixed_typed()) {
            return sluice_core::schema::common_type(t, typed).as_ref() == Some(t);
        }
        if self.mixed_typed() || self.nested_values > 0 || (self.quoted && self.unquoted_number) {
            return matches!(t, DataType::Utf8 | DataType::LargeUtf8);
        }
        let digits_fit = |p: u8, s: i8| {
            self.max_int_digits + s.max(0) as usize <= p as usize
                && self.max_scale <= s.max(0) as usize
        };
        match t {
            DataType::Utf8 | DataType::LargeUtf8 => true,
            DataType::Boolean => self.bool_ok,
            DataType::Int64 => self.int_ok,
            // Digits, not range, are tracked: short enough is sure to fit.
            DataType::Int32 => self.int_ok && self.max_int_digits <= 9,
            DataType::Int16 => self.int_ok && self.max_int_digits <= 4,
            DataType::Decimal128(p, s) => (self.int_ok || self.dec_ok) && digits_fit(*p, *s),
            DataType::Float64 | DataType::Float32 => self.int_ok || self.dec_ok || self.float_ok,
            DataType::Date32 => self.date_ok,
            DataType::Timestamp(_, None) => self.ts_ok || self.date_ok,
            DataType::Timestamp(_, Some(_)) => self.tstz_ok,
            _ => false,
        }
    }

    /// The narrowest type that holds every observed value.
    pub fn data_type(&self) -> DataType {
        if let Some(typed) = self.typed.as_ref().filter(|_| !self.mixed_typed()) {
            return typed.clone();
        }
        if self.evidence.values == 0
            || self.mixed_typed()
            || self.nested_values > 0
            || (self.quoted && self.unquoted_number)
        {
            return DataType::Utf8;
        }
        if self.bool_ok {
            DataType::Boolean
        } else if self.int_ok {
            DataType::Int64
        } else if self.dec_ok {
            // Headroom over the sample: 18 digits while that fits, else the maximum.
            let need = self.max_int_digits + self.max_scale;
            let p = if need <= 16 {
                18
            } else {
                MAX_DECIMAL_PRECISION as usize
            };
            DataType::Decimal128(p.max(need) as u8, self.max_scale as i8)
        } else if self.float_ok {
            DataType::Float64
        } else if self.date_ok {
            DataType::Date32
        } else if self.ts_ok {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        } else if self.tstz_ok {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        } else {
            DataType::Utf8
        }
    }
}

/// Where two stated types meet: their common type; numbers that have none (an integer and a
/// double, as JSON numbers widen) in double; anything else in text.
fn typed_meet(a: &DataType, b: &DataType) -> DataType {
    let numeric = |t: &DataType| t.is_numeric();
    sluice_core::schema::common_type(a, b).unwrap_or(match numeric(a) && numeric(b) {
        true => DataType::Float64,
        false => DataType::Utf8,
    })
}

/// (integer digits, fractional digits) of a plain decimal literal, or None.
fn decimal_shape(s: &str) -> Option<(usize, usize)> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((int.trim_start_matches('0').len(), frac.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> DataType {
        let mut i = Inference::default();
        for v in values {
            i.observe_text(v);
        }
        i.data_type()
    }

    #[test]
    fn decimals_never_round() {
        assert_eq!(parse_decimal("-999.99", 15, 2), Ok(-99999));
        assert_eq!(parse_decimal("12", 15, 2), Ok(1200));
        assert_eq!(parse_decimal("0.5", 3, 1), Ok(5));
        assert_eq!(parse_decimal("1.230", 15, 2), Ok(123));
        assert!(parse_decimal("1.234", 15, 2).unwrap_err().contains("round"));
        assert!(parse_decimal("1234", 4, 2).is_err());
        assert!(parse_decimal("1e3", 10, 0).is_err());
        assert!(parse_decimal("", 10, 0).is_err());
        assert!(parse_decimal("-", 10, 0).is_err());
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(parse_date("1970-01-02"), Ok(1));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        assert!(parse_date("2021-02-30").is_err());
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.000002"), Ok(1_000_002));
        assert_eq!(parse_timestamptz("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_timestamptz("1970-01-01T00:00:00.5Z"), Ok(500_000));
    }

    #[test]
    fn inference_widens() {
        assert_eq!(infer(&["1", "2"]), DataType::Int64);
        assert_eq!(infer(&["1", "2.50"]), DataType::Decimal128(18, 2));
        assert_eq!(infer(&["1", "2.5", "1e10"]), DataType::Float64);
        assert_eq!(infer(&["1", "x"]), DataType::Utf8);
        assert_eq!(infer(&["2020-01-01", "2020-01-02"]), DataType::Date32);
        assert_eq!(
            infer(&["2020-01-01", "2020-01-02 10:00:00"]),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(
            infer(&["2020-01-01T10:00:00Z"]),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(infer(&["true", "FALSE"]), DataType::Boolean);
        assert_eq!(
            infer(&["99999999999999999999"]),
            DataType::Decimal128(38, 0)
        );
        assert_eq!(infer(&[]), DataType::Utf8);
        let (mut a, mut b) = (Inference::default(), Inference::default());
        a.observe_text("12");
        b.observe_text("3.25");
        b.observe_null();
        a.merge(&b);
        assert_eq!(a.data_type(), DataType::Decimal128(18, 2));
        assert_eq!((a.evidence.values, a.evidence.nulls), (2, 1));
        let mut j = Inference::default();
        j.observe_json_scalar("1");
        assert!(!j.conflicting_kinds());
        j.observe_json_string("a");
        assert_eq!(j.data_type(), DataType::Utf8);
        assert!(j.conflicting_kinds());
    }
}
