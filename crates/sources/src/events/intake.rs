//! Where posted events wait between the HTTP handler and the source's change stream, bounded
//! in bytes: a request takes its bytes from the buffer before it is queued and gives them
//! back once it is answered, so a full buffer refuses requests instead of growing memory.
//!
//! ```text
//!   POST ──reserve bytes──► Posted ──queue──► EventsStream (capture driver) ──lake commit──►
//!    ▲                                                                           │
//!    └───────────────────────────── Answer (oneshot) ◄───────────────────────────┘
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::body::Line;

/// The buffer counts in KiB (a semaphore holds at most u32::MAX permits).
const UNIT: usize = 1024;

/// One request, parsed, on its way into the lake.
pub struct Posted {
    pub table: String,
    /// The body as received (after gzip); lines point into it.
    pub body: Bytes,
    pub lines: Vec<Line>,
    pub received: DateTime<Utc>,
    pub answer: oneshot::Sender<Answer>,
    /// Its share of the buffer, given back when it is answered.
    pub permit: OwnedSemaphorePermit,
}

/// What a request's client is told.
#[derive(Debug)]
pub enum Answer {
    /// Its events are committed in the lake (its rejects in the quarantine).
    Committed {
        accepted: u64,
        /// Events whose id had landed already (or was in the same batch): not landed again.
        duplicates: u64,
        /// Per rejected line: its number and why.
        rejected: Vec<(u64, String)>,
    },
    /// Not taken: nothing of it was committed.
    Refused(String),
}

/// A request the intake did not queue.
#[derive(Debug)]
pub enum NotTaken {
    /// The buffer holds as much as it may now (429: try again shortly).
    Full,
    /// No change stream takes events in this process now (503).
    Idle,
}

/// One events source's intake.
pub struct Intake {
    tx: mpsc::UnboundedSender<Posted>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Posted>>>,
    buffer: Arc<Semaphore>,
    attached: AtomicBool,
}

impl Intake {
    pub fn new(buffer_bytes: usize) -> Intake {
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = (buffer_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Intake {
            tx,
            rx: Mutex::new(Some(rx)),
            buffer: Arc::new(Semaphore::new(permits)),
            attached: AtomicBool::new(false),
        }
    }

    /// Takes `bytes` of the buffer for one request, or says it is full.
    pub fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, NotTaken> {
        let n = u32::try_from(bytes.div_ceil(UNIT).max(1)).map_err(|_| NotTaken::Full)?;
        self.buffer
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| NotTaken::Full)
    }

    /// Whether a change stream takes events now.
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Queues a request for the stream (given back when no stream takes events).
    pub fn post(&self, posted: Posted) -> Result<(), Box<(NotTaken, Posted)>> {
        if !self.attached() {
            return Err(Box::new((NotTaken::Idle, posted)));
        }
        self.tx
            .send(posted)
            .map_err(|e| Box::new((NotTaken::Idle, e.0)))
    }

    /// The queue, for the one stream that takes events (None: one has it already).
    pub(super) fn attach(&self) -> Option<mpsc::UnboundedReceiver<Posted>> {
        let rx = self.rx.lock().expect("intake").take()?;
        self.attached.store(true, Ordering::Release);
        Some(rx)
    }

    /// The stream stopped: requests still queued are dropped unanswered (their clients are
    /// told nothing was committed), and the queue waits for the next stream.
    pub(super) fn detach(&self, mut rx: mpsc::UnboundedReceiver<Posted>) {
        self.attached.store(false, Ordering::Release);
        while rx.try_recv().is_ok() {}
        *self.rx.lock().expect("intake") = Some(rx);
    }
}

/// Every events source's intake in this process: the HTTP handler posts to the one the
/// source's stream takes from.
#[derive(Default)]
pub struct Collectors(Mutex<HashMap<String, Arc<Intake>>>);

impl Collectors {
    /// Source `name`'s intake (made on first use with a buffer of `buffer_bytes`).
    pub fn intake(&self, name: &str, buffer_bytes: usize) -> Arc<Intake> {
        self.0
            .lock()
            .expect("collectors")
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Intake::new(buffer_bytes)))
            .clone()
    }
}
