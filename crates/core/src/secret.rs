//! Secrets: written in config only as `{ env = "NAME" }` or `{ file = "/path" }`, resolved at
//! the moment of use, and impossible to print by accident (no `Serialize`, a redacting `Debug`).

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

#[derive(Clone, PartialEq, Eq)]
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

/// How a secret is written, for errors (which never repeat what was written instead).
pub(crate) const FORM: &str =
    "a secret is written as { env = \"NAME\" } or { file = \"/path\" }, never as its value";

// By hand: serde's derived errors quote the value they refuse ("unknown variant `hunter2`"),
// and a password written in place would be printed with the config error.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;

        impl<'de> Visitor<'de> for Form {
            type Value = Secret;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(FORM)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    let place: String = map.next_value()?;
                    let secret = match key.as_str() {
                        "env" => Secret::Env(place),
                        "file" => Secret::File(place),
                        _ => return Err(de::Error::custom(format!("`{key}`: {FORM}"))),
                    };
                    if found.replace(secret).is_some() {
                        return Err(de::Error::custom(FORM));
                    }
                }
                found.ok_or_else(|| de::Error::custom(FORM))
            }

            // Anything else is refused without repeating it.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Secret, E> {
                Err(E::custom(FORM))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(FORM))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(FORM))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(FORM))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(FORM))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(de::Error::custom(FORM))
            }
        }

        d.deserialize_any(Form)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        password: Secret,
    }

    /// A value written where its place belongs is refused without being repeated.
    #[test]
    fn a_secret_written_in_place_is_refused_unrepeated() {
        for text in [
            "password = \"hunter2\"",
            "password = 271828",
            "password = [\"hunter2\"]",
            "password = { value = \"hunter2\" }",
            "password = { env = \"A\", file = \"hunter2\" }",
        ] {
            // The message is what config errors show (never the source line).
            let err = toml::from_str::<Holder>(text)
                .unwrap_err()
                .message()
                .to_string();
            assert!(err.contains("{ env = "), "{text}: {err}");
            assert!(
                !err.contains("hunter2") && !err.contains("271828"),
                "{text}: {err}"
            );
        }
        let ok: Holder = toml::from_str("password = { file = \"/run/pw\" }").unwrap();
        assert_eq!(ok.password, Secret::File("/run/pw".into()));
    }
}
