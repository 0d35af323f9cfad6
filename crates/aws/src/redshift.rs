//! Temporary Redshift credentials from IAM, fetched at every connect (they last 15 minutes,
//! long enough to sign in; a session outlives them):
//!
//! - a provisioned cluster: `GetClusterCredentials` for the URL's user, who signs in as
//!   `IAM:user` (`IAMA:user` when sluice may create the user), optionally joining groups;
//! - a Serverless workgroup: `GetCredentials`, which signs in the caller's IAM identity.
//!
//! Whose credentials to ask for is read from the config and the endpoint's host by
//! [`IamAuth::endpoint`], the reading the config's checks use too.

pub use sluice_core::config::{RedshiftEndpoint as Endpoint, RedshiftIamAuth as IamAuth};

/// A temporary sign-in; the password is never printed.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, password redacted)", self.user)
    }
}

/// Shortest lifetime AWS grants (seconds): enough to sign in.
const DURATION_SECS: i32 = 900;

/// Fetches temporary credentials. Errors name the cluster or workgroup and the user, and
/// say whether trying again later may help.
pub fn credentials(auth: &IamAuth) -> Result<Credentials, crate::AwsError> {
    let endpoint = auth.endpoint().map_err(crate::AwsError::fatal)?;
    let region = match &endpoint {
        Endpoint::Cluster { region, .. } | Endpoint::Workgroup { region, .. } => region,
    };
    let fetched = crate::run(async {
        let config = crate::sdk_config(region.as_deref()).await;
        match &endpoint {
            Endpoint::Cluster { id, .. } => cluster_credentials(auth, &config, id).await,
            Endpoint::Workgroup { name, .. } => workgroup_credentials(auth, &config, name).await,
        }
    })??;
    match fetched {
        (Some(user), Some(password)) => Ok(Credentials { user, password }),
        _ => Err(crate::AwsError::fatal(format!(
            "{endpoint:?}: AWS answered without a user and password"
        ))),
    }
}

/// `GetClusterCredentials`: the user and password Redshift set for this sign-in.
async fn cluster_credentials(
    auth: &IamAuth,
    config: &aws_config::SdkConfig,
    id: &str,
) -> Result<(Option<String>, Option<String>), crate::AwsError> {
    let out = aws_sdk_redshift::Client::new(config)
        .get_cluster_credentials()
        .cluster_identifier(id)
        .db_user(&auth.user)
        .db_name(&auth.database)
        .set_db_groups((!auth.db_groups.is_empty()).then(|| auth.db_groups.clone()))
        .auto_create(auth.auto_create_user)
        .duration_seconds(DURATION_SECS)
        .send()
        .await
        .map_err(|e| {
            crate::sdk_error(&e).within(&format!(
                "GetClusterCredentials for user `{}` on cluster `{id}`",
                auth.user
            ))
        })?;
    Ok((
        out.db_user().map(str::to_string),
        out.db_password().map(str::to_string),
    ))
}

/// Serverless `GetCredentials`: a user and password for the caller's IAM identity.
async fn workgroup_credentials(
    auth: &IamAuth,
    config: &aws_config::SdkConfig,
    name: &str,
) -> Result<(Option<String>, Option<String>), crate::AwsError> {
    let out = aws_sdk_redshiftserverless::Client::new(config)
        .get_credentials()
        .workgroup_name(name)
        .db_name(&auth.database)
        .duration_seconds(DURATION_SECS)
        .send()
        .await
        .map_err(|e| {
            crate::sdk_error(&e).within(&format!("GetCredentials on Serverless workgroup `{name}`"))
        })?;
    Ok((
        out.db_user().map(str::to_string),
        out.db_password().map(str::to_string),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_their_password() {
        let c = Credentials {
            user: "IAM:loader".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("IAM:loader") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
