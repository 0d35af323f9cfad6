//! `*` and `?` name patterns: file names in folders, collection names in `tables`.

/// Whether `name` is a pattern rather than a name.
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// Whether `pattern` (`*` any run of characters, `?` one) matches all of `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes())
}

/// Whether one of `configured` (names or patterns) names `table`.
pub fn names(configured: &[String], table: &str) -> bool {
    configured.iter().any(|c| c == table || matches(c, table))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("*.tbl", "supplier.tbl"));
        assert!(!matches("*.tbl", "supplier.tbl.gz"));
        assert!(matches("part-?.csv*", "part-1.csv.gz"));
        assert!(matches("orders_*", "orders_"));
        assert!(!matches("orders_*", "order"));
        assert!(is_pattern("a*") && is_pattern("a?") && !is_pattern("orders"));
        let configured = vec!["orders_*".to_string(), "users".to_string()];
        assert!(names(&configured, "orders_2024") && names(&configured, "users"));
        assert!(!names(&configured, "users_old"));
    }
}
