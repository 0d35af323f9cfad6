//! Secrets: written in config only as where they live, never as their value, and impossible
//! to print by accident (no `Serialize`, a redacting `Debug`):
//!
//! - `{ env = "NAME" }` and `{ file = "/path" }` are read at the moment of use;
//! - `{ aws_secret = "name-or-arn", key = "password" }` (AWS Secrets Manager) and
//!   `{ ssm = "/path" }` (AWS Systems Manager Parameter Store) are fetched once when sluice
//!   reads its config (the `sluice-aws` crate, through the AWS SDK) and kept in this process
//!   only: [`remember`] holds them, [`Secret::resolve`] hands them out.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Secret {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (trailing newline trimmed).
    File(String),
    /// An AWS Secrets Manager secret (name or ARN); with `key`, that field of the secret's
    /// JSON object, else the whole secret string.
    AwsSecret { id: String, key: Option<String> },
    /// An AWS Systems Manager parameter (decrypted when it is a SecureString).
    Ssm(String),
}

/// Values of the secrets fetched from AWS, by where they live.
static FETCHED: Mutex<Option<HashMap<Secret, String>>> = Mutex::new(None);

/// Keeps the value fetched for an AWS secret, for [`Secret::resolve`].
pub fn remember(place: &Secret, value: String) {
    let mut fetched = FETCHED.lock().unwrap_or_else(|p| p.into_inner());
    fetched
        .get_or_insert_with(HashMap::new)
        .insert(place.clone(), value);
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names where the secret lives, never its value.
        match self {
            Secret::Env(name) => write!(f, "Secret(env {name})"),
            Secret::File(path) => write!(f, "Secret(file {path})"),
            Secret::AwsSecret { id, key: None } => write!(f, "Secret(aws_secret {id})"),
            Secret::AwsSecret { id, key: Some(k) } => write!(f, "Secret(aws_secret {id} key {k})"),
            Secret::Ssm(path) => write!(f, "Secret(ssm {path})"),
        }
    }
}

impl std::fmt::Display for Secret {
    /// Where the secret lives, as messages name it (never its value).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "environment variable {name}"),
            Secret::File(path) => write!(f, "secret file {path}"),
            Secret::AwsSecret { id, key: None } => write!(f, "AWS secret `{id}`"),
            Secret::AwsSecret { id, key: Some(k) } => write!(f, "key `{k}` of AWS secret `{id}`"),
            Secret::Ssm(path) => write!(f, "SSM parameter `{path}`"),
        }
    }
}

/// How a secret is written, for errors (which never repeat what was written instead).
pub(crate) const FORM: &str = "a secret is written as { env = \"NAME\" }, { file = \"/path\" }, { aws_secret = \"name-or-arn\", key = \"field\" } or { ssm = \"/parameter/path\" }, never as its value";

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
                let mut field = None;
                while let Some(key) = map.next_key::<String>()? {
                    // Places are names and paths: a value that is not a string is refused
                    // without being repeated.
                    let place: String = map
                        .next_value()
                        .map_err(|_| de::Error::custom(format!("`{key}`: {FORM}")))?;
                    let secret = match key.as_str() {
                        "env" => Secret::Env(place),
                        "file" => Secret::File(place),
                        "aws_secret" => Secret::AwsSecret {
                            id: place,
                            key: None,
                        },
                        "ssm" => Secret::Ssm(place),
                        "key" if field.is_none() => {
                            field = Some(place);
                            continue;
                        }
                        _ => return Err(de::Error::custom(format!("`{key}`: {FORM}"))),
                    };
                    if found.replace(secret).is_some() {
                        return Err(de::Error::custom(FORM));
                    }
                }
                match (found, field) {
                    (Some(Secret::AwsSecret { id, .. }), key) => Ok(Secret::AwsSecret { id, key }),
                    (Some(_), Some(_)) => Err(de::Error::custom(format!(
                        "`key` picks a field of an AWS Secrets Manager secret (aws_secret): {FORM}"
                    ))),
                    (Some(secret), None) => Ok(secret),
                    (None, _) => Err(de::Error::custom(FORM)),
                }
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
    /// Whether the secret lives in AWS (fetched when the config is read).
    pub fn in_aws(&self) -> bool {
        matches!(self, Secret::AwsSecret { .. } | Secret::Ssm(_))
    }

    /// Reads the secret's value. The error names where it was looked for, not what it holds.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::AwsSecret { .. } | Secret::Ssm(_) => FETCHED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|fetched| fetched.get(self).cloned())
                .ok_or_else(|| format!("{self} was not fetched when the config was read")),
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

    /// AWS places: a secret by name with or without a key, a parameter by path; `key` only
    /// goes with `aws_secret`, and a value that is not a string is not repeated.
    #[test]
    fn aws_places_are_read_and_misuse_is_named() {
        let parse = |text: &str| toml::from_str::<Holder>(text).map(|h| h.password);
        assert_eq!(
            parse("password = { aws_secret = \"prod/wh\", key = \"password\" }").unwrap(),
            Secret::AwsSecret {
                id: "prod/wh".into(),
                key: Some("password".into())
            }
        );
        // Keys in either order.
        assert_eq!(
            parse("password = { key = \"pw\", aws_secret = \"arn:aws:secretsmanager:us-east-1:1:secret:x\" }")
                .unwrap(),
            Secret::AwsSecret {
                id: "arn:aws:secretsmanager:us-east-1:1:secret:x".into(),
                key: Some("pw".into())
            }
        );
        assert_eq!(
            parse("password = { ssm = \"/sluice/pw\" }").unwrap(),
            Secret::Ssm("/sluice/pw".into())
        );
        for (text, says) in [
            (
                "password = { ssm = \"/p\", key = \"pw\" }",
                "`key` picks a field",
            ),
            (
                "password = { env = \"A\", key = \"pw\" }",
                "`key` picks a field",
            ),
            ("password = { key = \"pw\" }", "{ aws_secret = "),
            ("password = { ssm = 271828 }", "`ssm`"),
            (
                "password = { aws_secret = \"a\", ssm = \"hunter2\" }",
                "{ ssm = ",
            ),
        ] {
            let err = parse(text).unwrap_err().message().to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(
                !err.contains("hunter2") && !err.contains("271828"),
                "{text}: {err}"
            );
        }
    }

    /// An AWS secret resolves to what was fetched for it, and only once fetched; the error
    /// names the place.
    #[test]
    fn aws_secrets_resolve_once_remembered() {
        let place = Secret::Ssm("/test/remembered".into());
        let err = place.resolve().unwrap_err();
        assert!(err.contains("SSM parameter `/test/remembered`"), "{err}");
        remember(&place, "value-1".into());
        assert_eq!(place.resolve().unwrap(), "value-1");
        assert!(Secret::AwsSecret {
            id: "/test/remembered".into(),
            key: None
        }
        .resolve()
        .is_err());
    }
}
