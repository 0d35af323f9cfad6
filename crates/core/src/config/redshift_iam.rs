//! Whose temporary Redshift credentials to ask AWS for: the one reading of a Redshift URL's
//! host, shared by the config's checks and the sign-in itself (`sluice_aws::redshift`).
//!
//! The cluster or workgroup and its region come from the endpoint's host
//! (`prod.abc123.us-east-1.redshift.amazonaws.com`,
//! `wg.123456789012.us-east-1.redshift-serverless.amazonaws.com`) unless the config names
//! them (a host behind a proxy, a tunnel or a test server).

use crate::names::percent_decode;

const PROVISIONED_SUFFIX: &str = ".redshift.amazonaws.com";
const SERVERLESS_SUFFIX: &str = ".redshift-serverless.amazonaws.com";

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

impl IamAuth {
    /// The host, user and database of a warehouse URL, and the URL itself.
    pub fn from_url(url: &str) -> Result<(IamAuth, url::Url), String> {
        let u = url::Url::parse(url).map_err(|e| e.to_string())?;
        let auth = IamAuth {
            host: u.host_str().unwrap_or_default().to_string(),
            user: percent_decode(u.username()),
            database: percent_decode(u.path().trim_start_matches('/')),
            ..IamAuth::default()
        };
        Ok((auth, u))
    }

    /// A Serverless workgroup is asked (named, or the host is a Serverless endpoint).
    pub fn is_serverless(&self) -> bool {
        self.cluster_id.is_none()
            && (self.workgroup.is_some() || self.host_ends_with(SERVERLESS_SUFFIX))
    }

    fn host_ends_with(&self, suffix: &str) -> bool {
        self.host.to_ascii_lowercase().ends_with(suffix)
    }

    /// The cluster or workgroup to ask, from the config or else the endpoint's host.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let host = self.host.to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let region = |from_host: bool| match (&self.region, from_host) {
            (Some(r), _) => Some(r.clone()),
            (None, true) => labels.get(2).map(|r| r.to_string()),
            (None, false) => None,
        };
        let provisioned = host.ends_with(PROVISIONED_SUFFIX);
        let serverless = host.ends_with(SERVERLESS_SUFFIX);
        if let Some(id) = &self.cluster_id {
            return Ok(Endpoint::Cluster {
                id: id.clone(),
                region: region(provisioned),
            });
        }
        if let Some(name) = &self.workgroup {
            return Ok(Endpoint::Workgroup {
                name: name.clone(),
                region: region(serverless),
            });
        }
        match (serverless, provisioned) {
            (true, _) if labels.len() >= 6 => Ok(Endpoint::Workgroup {
                name: labels[0].to_string(),
                region: region(true),
            }),
            (false, true) if labels.len() >= 6 => Ok(Endpoint::Cluster {
                id: labels[0].to_string(),
                region: region(true),
            }),
            _ => Err(format!(
                "the host `{}` is not a Redshift endpoint: set `cluster_id` (provisioned) or `workgroup` (Serverless) to say whose credentials to ask for",
                self.host
            )),
        }
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
        let serverless = auth("wg.123456789012.us-east-2.redshift-serverless.amazonaws.com");
        assert!(serverless.is_serverless());
        assert_eq!(
            serverless.endpoint().unwrap(),
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
        assert!(!named.is_serverless());
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
        // Too few labels to hold a cluster, an account and a region.
        assert!(auth("x.redshift.amazonaws.com").endpoint().is_err());
    }

    #[test]
    fn the_url_gives_host_user_and_database_as_written() {
        // A `+` in a user name is a `+` (not a space, as in a form).
        let (a, u) = IamAuth::from_url("redshift://load+er@h.example:5439/my%20db").unwrap();
        assert_eq!(
            (a.host.as_str(), a.user.as_str(), a.database.as_str()),
            ("h.example", "load+er", "my db")
        );
        assert_eq!(u.port(), Some(5439));
    }
}
