//! sluice on AWS, through the official AWS SDK for Rust:
//!
//! - [`secrets`]: passwords and tokens kept in AWS Secrets Manager or Systems Manager
//!   Parameter Store, fetched once when sluice reads its config;
//! - [`redshift`]: temporary database credentials for a provisioned Redshift cluster
//!   (`GetClusterCredentials`) or a Serverless workgroup (`GetCredentials`).
//!
//! Credentials and region come from the SDK's standard chain (environment, shared config
//! and credentials files, web identity, ECS and EC2 instance roles), and `AWS_ENDPOINT_URL`
//! points every client at another endpoint (a local test server). Nothing here logs a value
//! it fetched; errors name what was asked for and why it failed.

pub mod redshift;
pub mod secrets;

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The SDK's configuration from the standard chain, in `region` where one is given.
async fn sdk_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    loader.load().await
}

/// Runs `work` to completion on a runtime of its own, on a thread of its own: callers are
/// sync code that may itself run inside an async runtime (which forbids blocking on one).
fn run<T: Send>(work: impl std::future::Future<Output = T> + Send) -> Result<T, AwsError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        AwsError::fatal(format!("cannot start the AWS client's runtime: {e}"))
                    })?;
                Ok(runtime.block_on(work))
            })
            .join()
            .map_err(|_| AwsError::fatal("the AWS client's thread panicked".into()))?
    })
}

/// What went wrong asking AWS, and whether asking again later may help (no answer, a
/// timeout, throttling, a service fault: the SDK has already retried those a few times).
#[derive(Debug, Clone)]
pub struct AwsError {
    pub message: String,
    pub transient: bool,
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl AwsError {
    fn fatal(message: String) -> AwsError {
        AwsError {
            message,
            transient: false,
        }
    }

    /// The same error, `context` first.
    fn within(self, context: &str) -> AwsError {
        AwsError {
            message: format!("{context}: {}", self.message),
            ..self
        }
    }
}

/// Service error codes that say "later" rather than "no".
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceErrorException",
];

/// An SDK error: the service's error code and message where the service answered, else the
/// whole chain of causes (no credentials, no connection, ...).
fn sdk_error<E, R>(e: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> AwsError
where
    E: std::error::Error + aws_sdk_secretsmanager::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_secretsmanager::error::SdkError;
    let chain = || aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string();
    match e {
        SdkError::ServiceError(service) => {
            let service = service.err();
            let code = service.code();
            AwsError {
                message: match (code, service.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_string(),
                    _ => chain(),
                },
                transient: code.is_some_and(|c| TRANSIENT_CODES.contains(&c)),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AwsError {
                message: chain(),
                transient: true,
            }
        }
        _ => AwsError::fatal(chain()),
    }
}
