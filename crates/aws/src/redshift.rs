//! Temporary Redshift credentials from IAM, fetched at every connect (they last 15 minutes,
//! long enough to sign in; a session outlives them):
//!
//! - a provisioned cluster: `GetClusterCredentials` for the URL's user, who signs in as
//!   `IAM:user` (`IAMA:user` when sluice may create the user), optionally joining groups;
//! - a Serverless workgroup: `GetCredentials`, which signs in the caller's IAM identity.
//!
//! The cluster or workgroup and its region come from the endpoint's host
//! (`prod.abc123.us-east-1.redshift.amazonaws.com`,
//! `wg.123456789012.us-east-1.redshift-serverless.amazonaws.com`) unless the config names
//! them (a host behind a proxy, a tunnel or a test server).

/// Whose credentials to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Cluster {
        id: String,
        region: Option<String>,
    },
    Workgroup {
        name: String,
        region: Option<String>,
    },
}

/// What the config says about IAM sign-in, with the URL's parts.
#[derive(Debug, Clone, Default)]
pub struct IamAuth {
    pub host: String,
    /// The URL's user (provisioned clusters sign in as this user).
    pub user: String,
    pub database: String,
    pub cluster_id: Option<String>,
    pub workgroup: Option<String>,
    pub region: Option<String>,
    pub db_groups: Vec<String>,
    pub auto_create_user: bool,
}

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

impl IamAuth {
    /// The cluster or workgroup to ask, from the config or else the endpoint's host.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let host = self.host.to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let region_of_host = || labels.get(2).map(|r| r.to_string());
        let region = |from_host: bool| match (&self.region, from_host) {
            (Some(r), _) => Some(r.clone()),
            (None, true) => region_of_host(),
            (None, false) => None,
        };
        if let Some(id) = &self.cluster_id {
            let on_host = host.ends_with(".redshift.amazonaws.com");
            return Ok(Endpoint::Cluster {
                id: id.clone(),
                region: region(on_host),
            });
        }
        let serverless = host.ends_with(".redshift-serverless.amazonaws.com");
        if let Some(name) = &self.workgroup {
            return Ok(Endpoint::Workgroup {
                name: name.clone(),
                region: region(serverless),
            });
        }
        match (serverless, host.ends_with(".redshift.amazonaws.com")) {
            (true, _) if labels.len() >= 6 => Ok(Endpoint::Workgroup {
                name: labels[0].to_string(),
                region: region(true),
            }),
            (false, true) if labels.len() >= 6 => Ok(Endpoint::Cluster {
                id: labels[0].to_string(),
                region: region(true),
            }),
            _ => Err(format!(
                "the host `{}` is not a Redshift endpoint: set `cluster_id` or `workgroup`",
                self.host
            )),
        }
    }

    /// Fetches temporary credentials. Errors name the cluster or workgroup and the user, and
    /// say whether trying again later may help.
    pub fn credentials(&self) -> Result<Credentials, crate::AwsError> {
        let endpoint = self.endpoint().map_err(crate::AwsError::fatal)?;
        let region = match &endpoint {
            Endpoint::Cluster { region, .. } | Endpoint::Workgroup { region, .. } => region,
        };
        let fetched = crate::run(async {
            let config = crate::sdk_config(region.as_deref()).await;
            match &endpoint {
                Endpoint::Cluster { id, .. } => self.cluster_credentials(&config, id).await,
                Endpoint::Workgroup { name, .. } => self.workgroup_credentials(&config, name).await,
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
        &self,
        config: &aws_config::SdkConfig,
        id: &str,
    ) -> Result<(Option<String>, Option<String>), crate::AwsError> {
        let out = aws_sdk_redshift::Client::new(config)
            .get_cluster_credentials()
            .cluster_identifier(id)
            .db_user(&self.user)
            .db_name(&self.database)
            .set_db_groups((!self.db_groups.is_empty()).then(|| self.db_groups.clone()))
            .auto_create(self.auto_create_user)
            .duration_seconds(DURATION_SECS)
            .send()
            .await
            .map_err(|e| {
                crate::sdk_error(&e).within(&format!(
                    "GetClusterCredentials for user `{}` on cluster `{id}`",
                    self.user
                ))
            })?;
        Ok((
            out.db_user().map(str::to_string),
            out.db_password().map(str::to_string),
        ))
    }

    /// Serverless `GetCredentials`: a user and password for the caller's IAM identity.
    async fn workgroup_credentials(
        &self,
        config: &aws_config::SdkConfig,
        name: &str,
    ) -> Result<(Option<String>, Option<String>), crate::AwsError> {
        let out = aws_sdk_redshiftserverless::Client::new(config)
            .get_credentials()
            .workgroup_name(name)
            .db_name(&self.database)
            .duration_seconds(DURATION_SECS)
            .send()
            .await
            .map_err(|e| {
                crate::sdk_error(&e)
                    .within(&format!("GetCredentials on Serverless workgroup `{name}`"))
            })?;
        Ok((
            out.db_user().map(str::to_string),
            out.db_password().map(str::to_string),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(host: &str) -> IamAuth {
        IamAuth {
            host: host.into(),
            user: "loader".into(),
            database: "dev".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_cluster_or_workgroup_comes_from_the_host_unless_named() {
        assert_eq!(
            auth("Prod.abc123.eu-west-1.redshift.amazonaws.com")
                .endpoint()
                .unwrap(),
            Endpoint::Cluster {
                id: "prod".into(),
                region: Some("eu-west-1".into())
            }
        );
        assert_eq!(
            auth("wg.123456789012.us-east-2.redshift-serverless.amazonaws.com")
                .endpoint()
                .unwrap(),
            Endpoint::Workgroup {
                name: "wg".into(),
                region: Some("us-east-2".into())
            }
        );
        // Named: a tunnel's host says nothing, the region falls to the SDK's own.
        let named = IamAuth {
            cluster_id: Some("prod".into()),
            ..auth("127.0.0.1")
        };
        assert_eq!(
            named.endpoint().unwrap(),
            Endpoint::Cluster {
                id: "prod".into(),
                region: None
            }
        );
        let named = IamAuth {
            workgroup: Some("wg".into()),
            region: Some("ap-south-1".into()),
            ..auth("wg.1.eu-west-1.redshift-serverless.amazonaws.com")
        };
        assert_eq!(
            named.endpoint().unwrap(),
            Endpoint::Workgroup {
                name: "wg".into(),
                region: Some("ap-south-1".into())
            }
        );
        let err = auth("db.internal").endpoint().unwrap_err();
        assert!(
            err.contains("db.internal") && err.contains("cluster_id"),
            "{err}"
        );
    }

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
