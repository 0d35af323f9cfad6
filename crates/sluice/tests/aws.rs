//! Secrets and sign-in through AWS, against a local AWS server (moto) on 127.0.0.1, with the
//! official AWS SDK pointed at it by `AWS_ENDPOINT_URL`:
//!
//! - warehouse passwords kept in Secrets Manager (a JSON field, or the whole string) and in
//!   Parameter Store (a SecureString) sign sluice in to a private PostgreSQL; a wrong name,
//!   key or path stops sluice naming the field and the place; no output (at trace level)
//!   ever holds the password;
//! - a Redshift warehouse with `iam_auth` signs in with the temporary user and password
//!   `GetClusterCredentials` gives, the PostgreSQL stand-in playing the cluster's side.

mod common;

use common::moto::{start_moto, Moto, AWS_ENV};
use common::postgres::{PgServer, PASSWORD};
use common::Sandbox;

/// A files source loading into PostgreSQL warehouse `pg`, its password written as `password`.
fn config(pg: &PgServer, password: &str) -> String {
    pg.warehouse_section("pg", password, "ssl_mode = \"disable\"")
        + r#"
[sources.s]
kind = "files"
url = "drops/"
table = "people"
warehouse = "pg"
[sources.s.tables.people]
primary_key = ["id"]
"#
}

/// `sluice sync` with the SDK pointed at moto and every log line on (trace), so that a
/// secret anywhere in sluice's or the SDK's logs would show: (exit code, stdout + stderr).
fn sync(sb: &Sandbox, moto: &Moto) -> (i32, String) {
    let endpoint = moto.endpoint();
    let mut env = AWS_ENV.to_vec();
    env.extend([
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("SLUICE_LOG", "trace"),
    ]);
    let out = sb.run(&["sync"], &env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(PASSWORD),
        "the password is in sluice's output:\n{text}"
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn warehouse_passwords_come_from_secrets_manager_and_parameter_store() {
    let moto = start_moto();
    let pg = PgServer::start(None);
    moto.boto3(&format!(
        r#"
import json
sm = client('secretsmanager')
sm.create_secret(Name='sluice/warehouse', SecretString=json.dumps({{'username': 'postgres', 'password': '{PASSWORD}', 'port': 5432}}))
sm.create_secret(Name='sluice/plain', SecretString='{PASSWORD}')
client('ssm').put_parameter(Name='/sluice/warehouse/password', Value='{PASSWORD}', Type='SecureString')
"#
    ));
    let sb = Sandbox::new();
    let people = |_: &Sandbox| pg.rows("SELECT id::text, name FROM s.people ORDER BY id");
    let row = |id: &str, name: &str| vec![Some(id.to_string()), Some(name.to_string())];

    // A field of a JSON secret.
    sb.write("drops/part-0.csv", "id,name\n1,ann\n2,bob\n");
    sb.config(&config(
        &pg,
        r#"{ aws_secret = "sluice/warehouse", key = "password" }"#,
    ));
    let (code, out) = sync(&sb, &moto);
    assert_eq!(code, 0, "{out}");
    assert_eq!(people(&sb), vec![row("1", "ann"), row("2", "bob")]);

    // A SecureString parameter, decrypted.
    sb.write("drops/part-1.csv", "id,name\n3,cy\n");
    sb.config(&config(&pg, r#"{ ssm = "/sluice/warehouse/password" }"#));
    let (code, out) = sync(&sb, &moto);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        people(&sb),
        vec![row("1", "ann"), row("2", "bob"), row("3", "cy")]
    );

    // A whole secret string, by ARN as well as by name.
    let arn = moto
        .boto3("print(client('secretsmanager').describe_secret(SecretId='sluice/plain')['ARN'])")
        .trim()
        .to_string();
    for id in ["sluice/plain", arn.as_str()] {
        sb.write(
            &format!("drops/part-{}.csv", id.len()),
            format!("id,name\n{},by {id}\n", id.len()),
        );
        sb.config(&config(&pg, &format!(r#"{{ aws_secret = "{id}" }}"#)));
        let (code, out) = sync(&sb, &moto);
        assert_eq!(code, 0, "{id}: {out}");
        assert!(
            people(&sb).contains(&row(&id.len().to_string(), &format!("by {id}"))),
            "{id}"
        );
    }

    // Wrong places stop sluice before any work, naming the field, the place and AWS's
    // reason; nothing more lands.
    let before = people(&sb);
    sb.write("drops/part-9.csv", "id,name\n9,never\n");
    for (password, says) in [
        (
            r#"{ aws_secret = "sluice/nope", key = "password" }"#,
            &[
                "warehouses.pg.password",
                "`sluice/nope`",
                "ResourceNotFoundException",
            ][..],
        ),
        (
            r#"{ aws_secret = "sluice/warehouse", key = "pw" }"#,
            &[
                "warehouses.pg.password",
                "no key `pw`",
                "password, port, username",
            ][..],
        ),
        (
            r#"{ aws_secret = "sluice/plain", key = "password" }"#,
            &["`sluice/plain`", "not a JSON object"][..],
        ),
        (
            r#"{ ssm = "/sluice/nope" }"#,
            &[
                "warehouses.pg.password",
                "SSM parameter `/sluice/nope`",
                "ParameterNotFound",
            ][..],
        ),
    ] {
        sb.config(&config(&pg, password));
        let (code, out) = sync(&sb, &moto);
        assert_ne!(code, 0, "{password}: {out}");
        for words in says {
            assert!(out.contains(words), "{password}: no `{words}` in:\n{out}");
        }
    }
    assert_eq!(people(&sb), before);
}

#[test]
fn redshift_signs_in_with_temporary_iam_credentials() {
    let moto = start_moto();
    let pg = PgServer::start(None);
    moto.boto3(
        "client('redshift').create_cluster(ClusterIdentifier='standin', NodeType='dc2.large', MasterUsername='admin', MasterUserPassword='Admin1234', ClusterType='single-node')",
    );
    // The SDK in this process (Project's sign-in) talks to moto. No other test of this
    // binary reads these variables: the secrets test gives its sluice runs their own.
    for (k, v) in AWS_ENV {
        std::env::set_var(k, v);
    }
    std::env::set_var("AWS_ENDPOINT_URL", moto.endpoint());
    let sb = Sandbox::new();
    let project = |cluster: &str| {
        sb.config(&format!(
            r#"
[lake]
url = "s3://lake/p"
endpoint = "{}"
region = "us-east-1"

[warehouses.rs]
kind = "redshift"
url = "redshift://loader@127.0.0.1:{}/wh"
iam_auth = true
cluster_id = "{cluster}"
iam_role = "arn:aws:iam::123456789012:role/sluice"
ssl_mode = "disable"

[sources.s]
kind = "files"
url = "drops/"
table = "t"
warehouse = "rs"
"#,
            moto.endpoint(),
            url::Url::parse(&pg.url()).unwrap().port().unwrap()
        ));
        sluice_engine::Project::open(&sb.path("sluice.toml")).unwrap()
    };
    let standin = project("standin");
    let first = standin.warehouse_options("rs").unwrap();
    let second = standin.warehouse_options("rs").unwrap();
    let user = |o: &sluice_warehouses::postgres::PgOptions| {
        sluice_core::names::percent_decode(url::Url::parse(&o.url).unwrap().username())
    };
    // GetClusterCredentials' user (IAM: and the URL's user), and a fresh password per
    // connect.
    assert_eq!(user(&first), "IAM:loader");
    assert_eq!(user(&second), "IAM:loader");
    let (p1, p2) = (
        first.password.clone().unwrap(),
        second.password.clone().unwrap(),
    );
    assert!(p1.len() >= 16 && p2.len() >= 16);
    assert_ne!(p1, p2, "temporary credentials are fetched at every connect");
    let shown = format!("{second:?}");
    assert!(
        shown.contains("redacted") && !shown.contains(&p2),
        "{shown}"
    );

    // The cluster's side: the temporary password GetClusterCredentials set signs the user in.
    pg.sql(
        "wh",
        &format!(
            "CREATE ROLE \"IAM:loader\" LOGIN PASSWORD $pw${p2}$pw$;\nGRANT CREATE ON DATABASE wh TO \"IAM:loader\";\nGRANT CREATE ON SCHEMA public TO \"IAM:loader\";"
        ),
    );
    let wh = sluice_warehouses::redshift::Redshift::connect(
        &second,
        sluice_warehouses::redshift::Staging::PostgresStandIn,
    )
    .unwrap_or_else(|e| panic!("sign-in with the temporary credentials: {e}"));
    drop(wh);
    assert_eq!(
        pg.rows("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = '_sluice'"),
        vec![vec![Some("IAM:loader".to_string())]],
        "sluice's ledger was made by the IAM user"
    );
    // The earlier, replaced password no longer signs in.
    assert!(sluice_warehouses::redshift::Redshift::connect(
        &first,
        sluice_warehouses::redshift::Staging::PostgresStandIn
    )
    .is_err());

    // An unknown cluster is named, with AWS's reason, and not tried again.
    let err = project("nope").warehouse_options("rs").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("warehouses.rs.iam_auth")
            && text.contains("cluster `nope`")
            && text.contains("user `loader`")
            && text.contains("ClusterNotFound"),
        "{text}"
    );
    assert_eq!(err.kind(), sluice_core::retry::ErrorKind::Fatal, "{text}");
    // AWS out of reach is a fault to try again later (serve retries the pass).
    std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    let err = project("standin").warehouse_options("rs").unwrap_err();
    assert_eq!(
        err.kind(),
        sluice_core::retry::ErrorKind::Transient,
        "{err}"
    );
}
