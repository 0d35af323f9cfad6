//! The longest record a file may hold. A CSV record with an unterminated quote, a JSON file
//! with no line breaks or a decompression bomb would otherwise be read into memory whole:
//! the input is read through a [`RecordBound`], which fails the read once the bytes since
//! the last record ended pass the limit, and the readers turn that into one quarantined
//! record (reading on after it where the format allows).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::SourceError;

/// The limit on one file's records, and where its last record ended.
#[derive(Clone)]
pub struct RecordBound {
    limit: u64,
    /// Bytes read from the input so far.
    read: Arc<AtomicU64>,
    /// Where the last record ended, in those bytes.
    ended: Arc<AtomicU64>,
}

/// The error the bounded input fails with.
#[derive(Debug, thiserror::Error)]
#[error("a record longer than {limit} bytes (max_record_bytes)")]
pub struct TooLong {
    pub limit: u64,
}

impl RecordBound {
    pub fn new(limit: u64) -> RecordBound {
        RecordBound {
            limit,
            read: Default::default(),
            ended: Default::default(),
        }
    }

    /// `r`, read through the bound.
    pub fn wrap(&self, r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
        Box::new(Bounded {
            inner: r,
            bound: self.clone(),
        })
    }

    /// A record ended where the reader stands, `unread` bytes short of what it has read.
    pub fn ended(&self, unread: usize) {
        let at = self
            .read
            .load(Ordering::Relaxed)
            .saturating_sub(unread as u64);
        self.ended.store(at, Ordering::Relaxed);
    }

    /// A record ended at byte `at` of the input.
    pub fn ended_at(&self, at: u64) {
        self.ended.store(at, Ordering::Relaxed);
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether a record of `len` bytes is past the limit (one read whole before the input
    /// could refuse it: the input is read in large blocks).
    pub fn too_long(&self, len: usize) -> bool {
        len as u64 > self.limit
    }

    /// Where the record being read began.
    pub fn record_start(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// The limit, when `e` is the bound refusing a record.
    pub fn refused(e: &SourceError) -> Option<u64> {
        let SourceError::Io { source, .. } = e else {
            return None;
        };
        source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TooLong>())
            .map(|t| t.limit)
    }

    /// The reason a refused record is quarantined with.
    pub fn reason(&self, rest: &str) -> String {
        format!(
            "a record longer than {} bytes (max_record_bytes) from byte {}{rest}",
            self.limit,
            self.record_start()
        )
    }
}

struct Bounded {
    inner: Box<dyn Read + Send>,
    bound: RecordBound,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let b = &self.bound;
        let read = b.read.load(Ordering::Relaxed);
        if read.saturating_sub(b.ended.load(Ordering::Relaxed)) > b.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                TooLong { limit: b.limit },
            ));
        }
        let n = self.inner.read(buf)?;
        b.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fail_once_a_record_passes_the_limit() {
        let bound = RecordBound::new(10);
        let mut r = bound.wrap(Box::new(std::io::Cursor::new(vec![b'a'; 100])));
        let mut buf = [0u8; 4];
        let mut got = 0;
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(got, 12, "reads until past the limit");
        let e = SourceError::Io {
            file: "f".into(),
            source: err,
        };
        assert_eq!(RecordBound::refused(&e), Some(10));
        // A record ending lets reading go on.
        bound.ended(0);
        assert_eq!(r.read(&mut buf).unwrap(), 4);
    }
}
