//! Secrets: written in config only as `{ env = "NAME" }` or `{ file = "/path" }`, resolved at
//! the moment of use, and impossible to print by accident (no `Serialize`, a redacting `Debug`).

use serde::Deserialize;

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Secret {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (trailing newline trimmed).
    File(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names where the secret lives, never its value.
        match self {
            Secret::Env(name) => write!(f, "Secret(env {name})"),
            Secret::File(path) => write!(f, "Secret(file {path})"),
        }
    }
}

impl Secret {
    /// Reads the secret's value. The error names where it was looked for, not what it holds.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read secret file {path}: {e}")),
        }
    }
}
