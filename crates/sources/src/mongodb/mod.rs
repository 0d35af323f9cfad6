//! MongoDB: collections as tables, snapshots by `_id` range, change streams with resume
//! tokens, through the official driver.
//!
//! - [`convert`]: BSON → column values (the one mapping).
//! - [`image`]: a document as an update left it, from its pre-image.
//! - [`schema`]: a collection's columns from sampled documents, by the document policy
//!   every source of documents shares ([`crate::document`]).
//! - [`snapshot`]: `_id` range plans and the chunk readers.
//! - [`stream`]: the change stream, assembled into whole transactions.
//! - [`source`]: the [`crate::Source`] they make together.
//!
//! Positions are a cluster time (8 bytes, big-endian: seconds then increment) followed by the
//! resume token (BSON) when there is one. Everything at or before the time is in the lake: a
//! stream opens after the token (`startAfter`), or after the time when a snapshot gave only
//! a time.

pub mod convert;
pub mod image;
pub mod schema;
pub mod snapshot;
pub mod source;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document, Timestamp};
use mongodb::options::{ClientOptions, ReadPreference, SelectionCriteria, Tls, TlsOptions};
use mongodb::Client;
use tokio::sync::OnceCell;

use crate::source::Position;
use crate::SourceError;

/// How to reach the server (nothing connects until first used).
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub password: Option<String>,
    /// Some(true): TLS whatever the URL says.
    pub tls: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_key_file: Option<PathBuf>,
    pub read_preference: Option<String>,
}

/// A connection pool to one database of a server.
pub struct Mongo {
    pub source: String,
    pub database: String,
    settings: Settings,
    client: OnceCell<Client>,
}

impl Mongo {
    pub fn new(source: &str, settings: Settings) -> Result<Mongo, SourceError> {
        let database = url::Url::parse(&settings.url)
            .ok()
            .map(|u| u.path().trim_matches('/').to_string())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| SourceError::Config {
                source_name: source.to_string(),
                message: "url names no database (mongodb://host:27017/DATABASE)".into(),
            })?;
        Ok(Mongo {
            source: source.to_string(),
            database,
            settings,
            client: OnceCell::new(),
        })
    }

    pub async fn client(&self) -> Result<&Client, SourceError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    pub async fn db(&self) -> Result<mongodb::Database, SourceError> {
        Ok(self.client().await?.database(&self.database))
    }

    async fn connect(&self) -> Result<Client, SourceError> {
        let s = &self.settings;
        let mut opts = ClientOptions::parse(&s.url)
            .await
            .map_err(|e| self.err("reading the url", e))?;
        if let Some(pw) = &s.password {
            match opts.credential.as_mut() {
                Some(c) => c.password = Some(pw.clone()),
                None => {
                    return Err(SourceError::Config {
                        source_name: self.source.clone(),
                        message:
                            "a password is set but the url names no user (mongodb://USER@host/db)"
                                .into(),
                    })
                }
            }
        }
        let files = s.tls_ca_file.is_some() || s.tls_cert_key_file.is_some();
        if s.tls == Some(true) || files {
            let mut tls = TlsOptions::default();
            tls.ca_file_path = s.tls_ca_file.clone();
            tls.cert_key_file_path = s.tls_cert_key_file.clone();
            opts.tls = Some(Tls::Enabled(tls));
        } else if s.tls == Some(false) {
            opts.tls = Some(Tls::Disabled);
        }
        if let Some(p) = &s.read_preference {
            let pref = match p.as_str() {
                "primary" => ReadPreference::Primary,
                "primaryPreferred" => ReadPreference::PrimaryPreferred { options: None },
                "secondary" => ReadPreference::Secondary { options: None },
                "secondaryPreferred" => ReadPreference::SecondaryPreferred { options: None },
                "nearest" => ReadPreference::Nearest { options: None },
                other => {
                    return Err(SourceError::Config {
                        source_name: self.source.clone(),
                        message: format!("read_preference `{other}` is not one the server knows"),
                    })
                }
            };
            opts.selection_criteria = Some(SelectionCriteria::ReadPreference(pref));
        }
        opts.app_name = Some(format!("sluice ({})", self.source));
        opts.server_selection_timeout
            .get_or_insert(Duration::from_secs(10));
        Client::with_options(opts).map_err(|e| self.err("connecting", e))
    }

    /// A driver error while `doing` something, classified: a lost resume point is
    /// [`SourceError::PositionLost`], refusals (auth, bad options) are fatal, the rest may pass.
    pub fn err(&self, doing: &str, e: mongodb::error::Error) -> SourceError {
        use mongodb::error::ErrorKind as K;
        let message = format!("{doing}: {e}");
        let source_name = self.source.clone();
        match e.kind.as_ref() {
            K::Command(c) if c.code == HISTORY_LOST || c.code_name == "ChangeStreamHistoryLost" => {
                SourceError::PositionLost {
                    source_name,
                    message,
                }
            }
            K::Authentication { .. }
            | K::InvalidArgument { .. }
            | K::InvalidTlsConfig { .. }
            | K::Command(_)
            | K::BsonDeserialization(_)
            | K::BsonSerialization(_) => SourceError::Config {
                source_name,
                message,
            },
            _ => SourceError::Unavailable {
                source_name,
                message,
            },
        }
    }

    /// The server's cluster time now: every write acknowledged before this call is at or
    /// before it.
    pub async fn cluster_time(&self) -> Result<Timestamp, SourceError> {
        let db = self.db().await?;
        let reply = db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| self.err("reading the cluster time", e))?;
        operation_time(&reply).ok_or_else(|| SourceError::Config {
            source_name: self.source.clone(),
            message: "the server reports no cluster time: change streams need a replica set (a single node started with --replSet is one)".into(),
        })
    }
}

/// The oplog's `ChangeStreamHistoryLost`.
pub const HISTORY_LOST: i32 = 286;

fn operation_time(reply: &Document) -> Option<Timestamp> {
    match reply.get("operationTime") {
        Some(Bson::Timestamp(t)) => Some(*t),
        _ => match reply.get_document("$clusterTime").ok()?.get("clusterTime") {
            Some(Bson::Timestamp(t)) => Some(*t),
            _ => None,
        },
    }
}

/// A cluster time as one ordered number.
pub fn time_number(t: Timestamp) -> i64 {
    ((t.time as i64) << 32) | t.increment as i64
}

pub fn time_of(n: i64) -> Timestamp {
    Timestamp {
        time: (n >> 32) as u32,
        increment: n as u32,
    }
}

/// A stream position: everything at or before `time` (and `token`, when given) is in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct MongoPosition {
    pub time: i64,
    pub token: Option<Vec<u8>>,
}

impl MongoPosition {
    pub fn encode(&self) -> Position {
        let mut b = self.time.to_be_bytes().to_vec();
        if let Some(t) = &self.token {
            b.extend_from_slice(t);
        }
        Position(b)
    }

    pub fn decode(p: &Position) -> Option<MongoPosition> {
        let time = i64::from_be_bytes(p.0.get(..8)?.try_into().ok()?);
        let token = (p.0.len() > 8).then(|| p.0[8..].to_vec());
        Some(MongoPosition { time, token })
    }
}

/// The cluster time a resume token stands at, where its format shows it: mongod's `_data`
/// is hex KeyString whose first value is that timestamp (type byte 130, then seconds and
/// increment, big-endian: Debezium reads it the same way); SecantusDB's is hex BSON with
/// the timestamp in `t`. None for any other: such a token is only resumed from, never
/// ordered.
pub fn token_time(token: &Document) -> Option<i64> {
    let hex = token.get_str("_data").ok()?;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if bytes.first() == Some(&130) {
        let secs = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?);
        let inc = u32::from_be_bytes(bytes.get(5..9)?.try_into().ok()?);
        return Some(time_number(Timestamp {
            time: secs,
            increment: inc,
        }));
    }
    match mongodb::bson::from_slice::<Document>(&bytes).ok()?.get("t") {
        Some(Bson::Timestamp(t)) => Some(time_number(*t)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_time_is_read_from_mongods_format_and_secantus() {
        // From MongoDB's manual ("Resume a Change Stream"): cluster time 1666193824, 1.
        let mongod = doc! { "_data": "82635019A0000000012B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F69640064635019A078BE67426D7CF4D2000004" };
        assert_eq!(
            token_time(&mongod),
            Some(time_number(Timestamp {
                time: 1_666_193_824,
                increment: 1
            }))
        );
        let secantus = doc! { "_data": "3b00000010730052c3000011740006000000a12a156b026e0004000000622e6500036b0016000000075f6964006b152aa149bf0cedfc3d95780000" };
        assert_eq!(
            token_time(&secantus),
            Some(time_number(Timestamp {
                time: 0x6b15_2aa1,
                increment: 6
            }))
        );
        assert_eq!(token_time(&doc! { "_data": "zz" }), None);
        assert_eq!(token_time(&doc! { "other": 1 }), None);
    }

    #[test]
    fn positions_round_trip_and_order_by_time() {
        let t = Timestamp {
            time: 1_700_000_000,
            increment: 7,
        };
        assert_eq!(time_of(time_number(t)), t);
        assert!(
            time_number(t)
                < time_number(Timestamp {
                    time: t.time,
                    increment: 8
                })
        );
        assert!(
            time_number(Timestamp {
                time: t.time,
                increment: u32::MAX
            }) < time_number(Timestamp {
                time: t.time + 1,
                increment: 0
            })
        );
        let p = MongoPosition {
            time: time_number(t),
            token: Some(vec![1, 2, 3]),
        };
        assert_eq!(MongoPosition::decode(&p.encode()), Some(p));
        let bare = MongoPosition {
            time: 5,
            token: None,
        };
        assert_eq!(MongoPosition::decode(&bare.encode()), Some(bare));
        assert_eq!(MongoPosition::decode(&Position(vec![1])), None);
    }
}
