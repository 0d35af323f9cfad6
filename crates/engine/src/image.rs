//! Images: the complete picture of a table that one extract gives — one snapshot run of a
//! database table, or the files one sync of a files source found new.
//!
//! `replace` loads the last complete image, never a part of one: a snapshot that failed half
//! way (its chunks committed) or is being resumed leaves yesterday's table as it is. And a
//! table without a key is rebuilt from a snapshot image rather than having its rows added
//! again (see `load`).
//!
//! The lake records images with its positions (application transactions), so they commit
//! atomically with the rows they cover:
//!
//! ```text
//!   sluice.image.open   first _sluice_seq of the image being landed (set by its first commit;
//!                       a crash leaves it open, and the next extract continues it)
//!   sluice.image.from   first _sluice_seq of the last complete image ...
//!   sluice.image.to     ... and its last (to < from: the image is empty)
//!   sluice.image.at     the lake version that completed it (a warehouse table loaded at an
//!                       earlier version has not seen it)
//! ```

use sluice_lake::LakeTable;

use crate::EngineError;

const OPEN: &str = "sluice.image.open";
const FROM: &str = "sluice.image.from";
const TO: &str = "sluice.image.to";
const AT: &str = "sluice.image.at";

/// A complete image: its seqs `from..=to` and the lake version that completed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub from: i64,
    pub to: i64,
    pub at: i64,
}

/// A table's images as its lake positions say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Images {
    /// The last complete image.
    pub last: Option<Image>,
    /// The first seq of an image still being landed.
    pub open: Option<i64>,
}

impl Images {
    pub async fn of(log: &LakeTable) -> Result<Images, EngineError> {
        let last = match (
            log.app_version(FROM).await?,
            log.app_version(TO).await?,
            log.app_version(AT).await?,
        ) {
            (Some(from), Some(to), Some(at)) => Some(Image { from, to, at }),
            _ => None,
        };
        // An open mark within the last image was that image's own (an image opens with the
        // commit of its first row, so an open image's mark is past every closed image).
        let open = log
            .app_version(OPEN)
            .await?
            .filter(|&o| last.is_none_or(|l| o > l.to));
        Ok(Images { last, open })
    }

    /// The positions a commit landing rows of an image carries: the open mark at `first_seq`
    /// (its first new row), unless an image is open already (then it continues it).
    pub fn opening(&mut self, first_seq: i64) -> Vec<(String, i64)> {
        match self.open {
            Some(_) => Vec::new(),
            None => {
                self.open = Some(first_seq);
                vec![(OPEN.to_string(), first_seq)]
            }
        }
    }

    /// The positions of the commit that completes the open image (or an empty one, when
    /// nothing opened it) at `last_seq`, the commit being the table's version `at`.
    pub fn closing(&mut self, last_seq: i64, at: i64) -> Vec<(String, i64)> {
        let from = self.open.take().unwrap_or(last_seq + 1);
        self.last = Some(Image {
            from,
            to: last_seq,
            at,
        });
        vec![
            (FROM.to_string(), from),
            (TO.to_string(), last_seq),
            (AT.to_string(), at),
        ]
    }
}
