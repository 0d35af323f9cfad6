//! Secrets kept in AWS: `{ aws_secret = "name-or-arn", key = "password" }` (Secrets Manager)
//! and `{ ssm = "/path" }` (Parameter Store, SecureStrings decrypted), fetched once when
//! sluice reads its config and handed to [`sluice_core::secret::remember`]. A secret that
//! cannot be fetched stops sluice before it starts work, naming the config field and the
//! secret, never a value.

use sluice_core::secret::{remember, Secret};

/// Fetches every AWS secret of `wanted` (config field, place), each place once, and keeps
/// their values for [`Secret::resolve`]. Secrets that are not in AWS are left alone, and
/// with none in AWS nothing is asked of AWS. Errors: `field: what failed`, one per line.
pub fn fetch_all(wanted: &[(String, &Secret)]) -> Result<(), String> {
    let mut places: Vec<(&String, &Secret)> = Vec::new();
    for (field, secret) in wanted {
        if secret.in_aws() && !places.iter().any(|(_, s)| s == secret) {
            places.push((field, *secret));
        }
    }
    if places.is_empty() {
        return Ok(());
    }
    let fetched = crate::run(async {
        let config = crate::sdk_config(None).await;
        let secrets = aws_sdk_secretsmanager::Client::new(&config);
        let parameters = aws_sdk_ssm::Client::new(&config);
        let mut out = Vec::new();
        for (field, place) in &places {
            let value = match place {
                Secret::AwsSecret { id, key } => secret_value(&secrets, id, key.as_deref()).await,
                Secret::Ssm(path) => parameter_value(&parameters, path).await,
                _ => unreachable!("only AWS places are fetched"),
            };
            out.push((*field, *place, value));
        }
        out
    })
    .map_err(|e| e.message)?;
    let mut errors = Vec::new();
    for (field, place, value) in fetched {
        match value {
            Ok(v) => remember(place, v),
            Err(e) => errors.push(format!("{field}: {place}: {e}")),
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("\n")),
    }
}

/// A Secrets Manager secret's string, or the `key` field of the JSON object it holds.
async fn secret_value(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
    key: Option<&str>,
) -> Result<String, String> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| crate::sdk_error(&e).message)?;
    let text = match (out.secret_string(), out.secret_binary()) {
        (Some(s), _) => s.to_string(),
        (None, Some(b)) => String::from_utf8(b.as_ref().to_vec())
            .map_err(|_| "holds binary data that is not UTF-8 text".to_string())?,
        (None, None) => return Err("has no value".into()),
    };
    match key {
        None => Ok(text),
        Some(key) => field_of(&text, key),
    }
}

/// Field `key` of a secret written as a JSON object (as the console's key/value secrets
/// and the RDS and Redshift rotation templates write them). Errors list the keys there are,
/// never a value.
fn field_of(text: &str, key: &str) -> Result<String, String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Err(format!(
            "is not a JSON object, so it has no key `{key}` (leave `key` out to use the whole secret)"
        ));
    };
    match fields.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!("key `{key}` is not text, a number or a boolean")),
        None => {
            let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
            keys.sort_unstable();
            Err(format!(
                "has no key `{key}` (its keys: {})",
                match keys.is_empty() {
                    true => "none".to_string(),
                    false => keys.join(", "),
                }
            ))
        }
    }
}

/// A Parameter Store parameter's value, decrypted when it is a SecureString.
async fn parameter_value(client: &aws_sdk_ssm::Client, path: &str) -> Result<String, String> {
    let out = client
        .get_parameter()
        .name(path)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| crate::sdk_error(&e).message)?;
    out.parameter()
        .and_then(|p| p.value())
        .map(str::to_string)
        .ok_or_else(|| "has no value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_picked_from_a_json_secret_and_misses_list_keys_not_values() {
        let text = r#"{"username":"loader","password":"s3cr3t!","port":5439,"ssl":true}"#;
        assert_eq!(field_of(text, "password").unwrap(), "s3cr3t!");
        assert_eq!(field_of(text, "port").unwrap(), "5439");
        assert_eq!(field_of(text, "ssl").unwrap(), "true");
        let err = field_of(text, "pass").unwrap_err();
        assert!(
            err.contains("no key `pass`") && err.contains("password, port, ssl, username"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = field_of("s3cr3t!", "password").unwrap_err();
        assert!(
            err.contains("not a JSON object") && !err.contains("s3cr3t"),
            "{err}"
        );
        let err = field_of(r#"{"password":{"a":"s3cr3t"}}"#, "password").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    /// Nothing in AWS: nothing is asked of AWS (no credentials or network needed).
    #[test]
    fn secrets_outside_aws_need_no_aws() {
        let env = Secret::Env("X".into());
        let file = Secret::File("/x".into());
        fetch_all(&[("a".into(), &env), ("b".into(), &file)]).unwrap();
    }
}
