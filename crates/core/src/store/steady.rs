//! Reads that outlast a broken connection. `object_store` retries what it can classify (a
//! refused connect, a timeout, a reset on an idempotent request) but gives up at once on a
//! transport failure it cannot name (a pooled connection the endpoint cut while a request
//! was queued on it) and never retries a response body cut in the middle of a listing. Both
//! are what a short S3 outage looks like, so reads of the lake and of the drops are tried
//! again here, a few times, after the client's own retries. Writes are not: a conditional
//! Delta commit repeated after a cut connection could look like a concurrent commit.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// How many times a read is tried again after the client gave up, and the first wait
/// (doubling each time: 0.5, 1, 2, 4 s).
const AGAIN: u32 = 4;
#[cfg(not(test))]
const FIRST_WAIT: Duration = Duration::from_millis(500);
#[cfg(test)]
const FIRST_WAIT: Duration = Duration::from_millis(1);
/// A failure slower than this came after the client's own retries (a refused endpoint takes
/// about 15 s to give up on): trying again would only multiply the wait of a real outage.
const FAST_FAILURE: Duration = Duration::from_secs(5);

/// An object store whose reads (get, head, list) are tried again after a transport failure
/// the client did not retry.
#[derive(Debug)]
pub struct Steady {
    inner: Arc<dyn ObjectStore>,
}

impl Steady {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Steady {
        Steady { inner }
    }
}

impl fmt::Display for Steady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Whether `e` is a broken transport: an HTTP error the client could not classify, a body it
/// could not read whole, a cut connection. Refused connections and timeouts are not: the
/// client waits them out itself.
pub fn broken_transport(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Unknown | HttpErrorKind::Decode | HttpErrorKind::Interrupted
            );
        }
        source = err.source();
    }
    false
}

/// Whether a read that failed with `e` after `took` is worth another try.
fn worth_again(e: &object_store::Error, took: Duration) -> bool {
    took < FAST_FAILURE && broken_transport(e)
}

/// Runs `read` until it succeeds, fails otherwise than fast by a broken transport, or the
/// tries are spent.
async fn again<T, F, Fut>(mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut wait = FIRST_WAIT;
    for _ in 0..AGAIN {
        let started = Instant::now();
        match read().await {
            Err(e) if worth_again(&e, started.elapsed()) => {
                tracing::warn!(error = %e, wait = ?wait, "an object store read broke; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    read().await
}

#[async_trait]
impl ObjectStore for Steady {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        again(|| self.inner.get_opts(location, options.clone())).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        resumed_listing(self.inner.clone(), prefix.cloned(), None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        resumed_listing(self.inner.clone(), prefix.cloned(), Some(offset.clone()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        again(|| self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A listing that, when the transport breaks, lists again after the last key it yielded
/// (S3 lists in key order), so no key is yielded twice or skipped.
fn resumed_listing(
    inner: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    offset: Option<Path>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    struct State {
        inner: Arc<dyn ObjectStore>,
        prefix: Option<Path>,
        after: Option<Path>,
        page: Option<BoxStream<'static, Result<ObjectMeta>>>,
        broken: u32,
        done: bool,
    }
    let open = |s: &State| match &s.after {
        Some(after) => s.inner.list_with_offset(s.prefix.as_ref(), after),
        None => s.inner.list(s.prefix.as_ref()),
    };
    let state = State {
        inner,
        prefix,
        after: offset,
        page: None,
        broken: 0,
        done: false,
    };
    futures::stream::unfold(state, move |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if s.page.is_none() {
                s.page = Some(open(&s));
            }
            let asked = Instant::now();
            match s.page.as_mut().expect("opened above").next().await {
                Some(Ok(meta)) => {
                    s.after = Some(meta.location.clone());
                    return Some((Ok(meta), s));
                }
                Some(Err(e)) if s.broken < AGAIN && worth_again(&e, asked.elapsed()) => {
                    tracing::warn!(error = %e, "an object store listing broke; listing again after its last key");
                    tokio::time::sleep(FIRST_WAIT * 2u32.pow(s.broken)).await;
                    s.broken += 1;
                    s.page = None;
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                None => return None,
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    use super::*;

    /// A store whose reads break like a cut connection: each listing after `cut_after` keys
    /// and each get, while `breaks` lasts.
    #[derive(Debug)]
    struct Cut {
        inner: InMemory,
        cut_after: usize,
        breaks: AtomicU32,
        gets: AtomicU32,
    }

    impl fmt::Display for Cut {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cut")
        }
    }

    fn cut_error() -> object_store::Error {
        let io = std::io::Error::other("connection closed while the request was queued");
        object_store::Error::Generic {
            store: "cut",
            source: Box::new(HttpError::new(HttpErrorKind::Unknown, io)),
        }
    }

    impl Cut {
        fn breaks(&self) -> bool {
            self.breaks
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
    }

    #[async_trait]
    impl ObjectStore for Cut {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            if self.breaks() {
                return Err(cut_error());
            }
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            let listing = self.inner.list(prefix);
            if !self.breaks() {
                return listing;
            }
            listing
                .take(self.cut_after)
                .chain(futures::stream::once(async { Err(cut_error()) }))
                .boxed()
        }
        fn list_with_offset(
            &self,
            prefix: Option<&Path>,
            offset: &Path,
        ) -> BoxStream<'static, Result<ObjectMeta>> {
            let listing = self.inner.list_with_offset(prefix, offset);
            if !self.breaks() {
                return listing;
            }
            listing
                .take(self.cut_after)
                .chain(futures::stream::once(async { Err(cut_error()) }))
                .boxed()
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    async fn store_of(keys: usize, cut_after: usize, breaks: u32) -> Arc<Cut> {
        let inner = InMemory::new();
        for i in 0..keys {
            inner
                .put(
                    &Path::from(format!("log/{i:04}.json")),
                    vec![b'x'; i].into(),
                )
                .await
                .unwrap();
        }
        Arc::new(Cut {
            inner,
            cut_after,
            breaks: AtomicU32::new(breaks),
            gets: AtomicU32::new(0),
        })
    }

    #[tokio::test]
    async fn a_listing_cut_twice_resumes_after_its_last_key_with_every_key_once() {
        let cut = store_of(10, 3, 2).await;
        let steady = Steady::new(cut.clone());
        let keys: Vec<String> = steady
            .list(Some(&Path::from("log")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        let expected: Vec<String> = (0..10).map(|i| format!("log/{i:04}.json")).collect();
        assert_eq!(keys, expected);
        assert_eq!(cut.breaks.load(Ordering::SeqCst), 0, "both cuts were hit");
    }

    #[tokio::test]
    async fn a_get_is_tried_again_after_cuts_until_the_tries_are_spent() {
        let cut = store_of(3, 0, 2).await;
        let steady = Steady::new(cut.clone());
        let got = steady.get(&Path::from("log/0002.json")).await.unwrap();
        assert_eq!(got.bytes().await.unwrap().len(), 2);
        assert_eq!(cut.gets.load(Ordering::SeqCst), 3);

        // More cuts than tries: the cut is the answer, after 1 + AGAIN attempts.
        let cut = store_of(3, 0, 100).await;
        let steady = Steady::new(cut.clone());
        let err = steady.get(&Path::from("log/0002.json")).await.unwrap_err();
        assert!(broken_transport(&err), "{err}");
        assert_eq!(cut.gets.load(Ordering::SeqCst), 1 + AGAIN);
    }

    #[tokio::test]
    async fn a_missing_object_is_not_tried_again() {
        let cut = store_of(1, 0, 0).await;
        let steady = Steady::new(cut.clone());
        let err = steady.get(&Path::from("log/none.json")).await.unwrap_err();
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        assert_eq!(cut.gets.load(Ordering::SeqCst), 1);
    }
}
