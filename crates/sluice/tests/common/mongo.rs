//! A private MongoDB-protocol server for one test. SecantusDB (a MongoDB wire-compatible
//! server, installed as a test tool by scripts/test.sh: `pip install SecantusDB` in its own
//! venv) on its own port on 127.0.0.1 and its own storage folder, stopped by pid when
//! dropped. It answers as a single-node replica set: change streams, resume tokens,
//! `updateLookup`, transactions and a capped oplog. `SLUICE_TEST_MONGO_URL` points the same
//! tests at a real replica set instead (each test uses a database of its own).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::Client;

use super::mariadb::free_port;

pub struct MongoServer {
    pub port: u16,
    pub dir: PathBuf,
    /// The database this test uses.
    pub database: String,
    child: Option<Child>,
    args: Vec<String>,
    external: Option<String>,
    rt: tokio::runtime::Runtime,
    client: Client,
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The SecantusDB server binary.
fn server_bin() -> String {
    std::env::var("SLUICE_SECANTUS")
        .unwrap_or_else(|_| "/opt/secantus-venv/bin/secantusd-py".into())
}

impl MongoServer {
    /// Starts a server with `extra` options (e.g. `--oplog-max-entries 50`).
    pub fn start(extra: &[&str]) -> MongoServer {
        Self::start_with(extra, None)
    }

    /// Starts a server that speaks only TLS, with the certificate `make_certs` wrote in
    /// `certs` (the test's own client trusts its CA).
    pub fn start_tls(certs: &std::path::Path) -> MongoServer {
        let file = |f: &str| certs.join(f).display().to_string();
        let (cert, key) = (file("server.pem"), file("server.key"));
        Self::start_with(
            &["--tls-cert-file", &cert, "--tls-key-file", &key],
            Some(certs.join("ca.pem")),
        )
    }

    fn start_with(extra: &[&str], tls_ca: Option<PathBuf>) -> MongoServer {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("sluice-mongo-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let database = format!("t{}_{next}", std::process::id());
        let external = std::env::var("SLUICE_TEST_MONGO_URL").ok();
        let port = free_port();
        let mut args = vec![
            "--host".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--storage-path".into(),
            dir.join("data").display().to_string(),
            "--log-level".into(),
            "WARNING".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = external.is_none().then(|| Self::spawn(&args, &dir));
        let url = match (&external, &tls_ca) {
            (Some(u), _) => u.clone(),
            (None, Some(ca)) => format!(
                "mongodb://127.0.0.1:{port}/?directConnection=true&tls=true&tlsCAFile={}",
                ca.display()
            ),
            (None, None) => format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        };
        let client = rt
            .block_on(Client::with_uri_str(&url))
            .expect("a MongoDB client");
        let m = MongoServer {
            port,
            dir,
            database,
            child,
            args,
            external,
            rt,
            client,
            _turn: turn,
        };
        m.wait_ready();
        m
    }

    fn spawn(args: &[String], dir: &std::path::Path) -> Child {
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        Command::new(server_bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start secantusd-py (scripts/test.sh installs it)")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = self.rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    self.client
                        .database("admin")
                        .run_command(doc! { "ping": 1 }),
                )
                .await
            });
            if matches!(ping, Ok(Ok(_))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the MongoDB test server did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The URL sluice connects with (the test's own database).
    pub fn url(&self) -> String {
        match &self.external {
            Some(u) => {
                let mut url = url::Url::parse(u).unwrap();
                url.set_path(&self.database);
                url.to_string()
            }
            None => format!(
                "mongodb://127.0.0.1:{}/{}?directConnection=true",
                self.port, self.database
            ),
        }
    }

    /// Kills the server (SIGKILL) and starts it again on its storage.
    pub fn restart(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
            self.child = Some(Self::spawn(&self.args, &self.dir));
            self.wait_ready();
        }
    }

    pub fn coll(&self, name: &str) -> mongodb::Collection<Document> {
        self.client.database(&self.database).collection(name)
    }

    /// Runs `f` (a future over the test's database) to its end.
    pub fn block<T>(&self, f: impl std::future::IntoFuture<Output = T>) -> T {
        self.rt.block_on(f.into_future())
    }

    /// Creates `coll` keeping pre- and post-images for change streams.
    pub fn create_with_images(&self, coll: &str) {
        self.block(self.client.database(&self.database).run_command(
            doc! { "create": coll, "changeStreamPreAndPostImages": { "enabled": true } },
        ))
        .unwrap_or_else(|e| panic!("create {coll}: {e}"));
    }

    /// Trims the oplog to its `--oplog-max-entries` now (SecantusDB's admin command).
    pub fn trim_oplog(&self) {
        self.block(
            self.client
                .database("admin")
                .run_command(doc! { "secantusAdmin.pruneOplog": 1 }),
        )
        .expect("secantusAdmin.pruneOplog");
    }

    pub fn insert(&self, coll: &str, docs: Vec<Document>) {
        for chunk in docs.chunks(5000) {
            self.block(self.coll(coll).insert_many(chunk.to_vec()))
                .unwrap_or_else(|e| panic!("insert into {coll}: {e}"));
        }
    }

    /// The documents of `coll` in `_id` order.
    pub fn docs(&self, coll: &str) -> Vec<Document> {
        use futures::TryStreamExt;
        self.block(async {
            self.coll(coll)
                .find(doc! {})
                .sort(doc! { "_id": 1 })
                .await
                .unwrap()
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        })
    }

    /// Runs `changes` against the database in one multi-document transaction.
    pub fn transaction(
        &self,
        changes: impl AsyncFnOnce(&mongodb::Database, &mut mongodb::ClientSession),
    ) {
        self.block(async {
            let mut session = self.client.start_session().await.unwrap();
            session.start_transaction().await.unwrap();
            let db = self.client.database(&self.database);
            changes(&db, &mut session).await;
            session.commit_transaction().await.unwrap();
        })
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        } else {
            let db = self.client.database(&self.database);
            let _ = self.block(db.drop());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
