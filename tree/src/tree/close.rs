//! A closeSession applied in steps: a session may own any number of ephemerals (the hostile-client suite's
//! make 200,000, 270 ms of deletes), and the applier holds the tree's write lock while it applies, so every
//! read on the server waited for the whole close. The applier instead applies a step of at most a few hundred
//! deletes per hold, and fires their watches in the same hold.
//!
//! Between steps, readers see some of the session's ephemerals gone and others not yet, as ZooKeeper's
//! readers do while its `killSession` deletes them one by one. What stays whole:
//! - the tree's last zxid moves to the close's only after its last step, so that a fuzzy snapshot begun
//!   between steps replays the whole close;
//! - the unlisted-close mark (see [`DataTree::last_unlisted_close`]) is set before the first delete the txn does
//!   not list, so that a snapshot spanning any of them is not kept;
//! - the applied zxid the server publishes (syncs, the leader's retirement of pending changes) follows the
//!   last step;
//! - [`DataTree::applying_close`] says when the tree is between steps, when its digest is neither the zxid
//!   before the close's nor the close's: a snapshot does not record its end then.

use std::mem;

use super::{Applied, DataTree};
use crate::txn::TxnHeader;

/// How far a closeSession's steps have gone.
#[derive(Debug, Default)]
pub struct CloseProgress {
    started: bool,
    /// The txn's paths deleted so far (its list first, as ZooKeeper does).
    listed: usize,
    /// The last path deleted that the txn did not list: the next step resumes after it.
    unlisted_after: Option<String>,
    done: bool,
}

impl CloseProgress {
    /// Whether the close is applied whole.
    pub fn done(&self) -> bool {
        self.done
    }
}

impl DataTree {
    /// Applies the next step of the closeSession `header` (listing `paths`): at most `max` deletes, in the order
    /// a whole apply makes them. Returns what this step deleted; [`CloseProgress::done`] once the close is
    /// applied whole.
    pub fn close_session_step(
        &mut self,
        header: &TxnHeader,
        paths: &[String],
        progress: &mut CloseProgress,
        max: usize,
    ) -> Applied {
        assert!(max > 0 && !progress.done, "a step deletes something of a close not yet applied");
        let (session, zxid) = (header.client_id, header.zxid);
        if !mem::replace(&mut progress.started, true) {
            self.sessions.remove(&session);
        }
        self.applying_close = true;
        // The txn's list first: a delete bumps the parent's pzxid even when a fuzzy snapshot no longer holds the
        // node. Only what was there counts as deleted.
        let mut deleted = Vec::new();
        let listed = &paths[progress.listed..paths.len().min(progress.listed.saturating_add(max))];
        progress.listed += listed.len();
        for p in listed {
            if self.delete(p, zxid).err.is_none() {
                deleted.push(p.clone());
            }
        }
        // Then whatever this replica still indexes under the session: everything, for a txn proposed without its
        // list (a session with more ephemerals than a txn can name).
        let room = max - listed.len();
        if progress.listed == paths.len() && room > 0 {
            let leftovers: Vec<String> = self
                .ephemerals_after(session, progress.unlisted_after.as_deref())
                .take(room)
                .map(str::to_owned)
                .collect();
            if !leftovers.is_empty() {
                self.unlisted_close = zxid;
            }
            progress.done = leftovers.len() < room;
            progress.unlisted_after = leftovers.last().cloned();
            for p in leftovers {
                self.delete(&p, zxid);
                deleted.push(p);
            }
        }
        if progress.done {
            self.applying_close = false;
            self.last_zxid = self.last_zxid.max(zxid);
        }
        Applied { deleted, ..Applied::default() }
    }
}
