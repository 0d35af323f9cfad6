//! Names: the one function that maps a source name to a warehouse identifier, and quoting.
//!
//! Identifiers are lower-cased, reduced to `[a-z0-9_]`, prefixed when they start with a digit,
//! cut to the warehouse's length limit, and de-duplicated within a table (`name`, `name_2`).
//! Every identifier that reaches generated SQL also goes through [`quote_ident`].

/// Maps one source name to a safe identifier of at most `max_len` bytes.
pub fn identifier(name: &str, max_len: usize) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out.truncate(max_len);
    out
}

/// Maps a list of column names, resolving collisions (`A` and `a` become `a` and `a_2`).
pub fn identifiers<'a>(names: impl IntoIterator<Item = &'a str>, max_len: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let base = identifier(name, max_len);
        let mut candidate = base.clone();
        let mut n = 2;
        while !seen.insert(candidate.clone()) {
            let suffix = format!("_{n}");
            let mut stem = base.clone();
            stem.truncate(max_len.saturating_sub(suffix.len()));
            candidate = format!("{stem}{suffix}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// Whether a warehouse name belongs to sluice: the ledger's schema `_sluice` and every name
/// starting with it (aliases, staging and helper tables in generated SQL). No schema, table
/// or column of a user's may have one, so generated SQL can never clash with user names.
pub fn is_reserved(ident: &str) -> bool {
    ident.starts_with("_sluice")
}

/// FNV-1a (64 bit): a hash that stays the same across runs, builds and platforms, for names
/// and ids that must not change.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `base` told apart by where it comes from: `base_<8 hex digits of origin's hash>`, cut to
/// `max_len` (the stem shortens, the suffix stays).
pub fn disambiguated(base: &str, origin: &str, max_len: usize) -> String {
    let suffix = format!("_{:08x}", stable_hash(origin.as_bytes()) as u32);
    let mut stem = base.to_string();
    let mut cut = max_len.saturating_sub(suffix.len());
    while !stem.is_char_boundary(cut.min(stem.len())) {
        cut -= 1;
    }
    stem.truncate(cut);
    format!("{stem}{suffix}")
}

/// Quotes an identifier for SQL (`"my ""odd"" name"`). Used for every generated identifier.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an identifier for MySQL/MariaDB: in backticks, a backtick inside doubled.
pub fn quote_backticked(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Text as written before `%XX` escaping (URL user names and databases; Hive and object
/// stores escape `=`, `/`, spaces and the like in folder names). Nothing else is decoded: a
/// `+` stays a `+`.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_dedups() {
        assert_eq!(identifier("Order Items", 63), "order_items");
        assert_eq!(identifier("2fa", 63), "_2fa");
        assert_eq!(identifier("é", 63), "_");
        assert_eq!(
            identifiers(["A", "a", "a_2"], 63),
            vec!["a", "a_2", "a_2_2"]
        );
        assert_eq!(identifier(&"x".repeat(100), 63).len(), 63);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }

    #[test]
    fn disambiguated_names_keep_their_length_and_differ_by_origin() {
        let a = disambiguated(&"x".repeat(63), "shop.order-items.merge", 63);
        let b = disambiguated(&"x".repeat(63), "shop.order_items.merge", 63);
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        assert_eq!(
            a,
            disambiguated(&"x".repeat(63), "shop.order-items.merge", 63)
        );
        assert!(disambiguated("orders", "o", 63).starts_with("orders_"));
        assert!(is_reserved("_sluice") && is_reserved("_sluice_s") && !is_reserved("sluice"));
    }
}
