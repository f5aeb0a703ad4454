//! The claim word: one compare-and-swap serializes the region's initialization and
//! every table append; a claimant proven dead is taken over.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::process::{self, Liveness};
use crate::sync::{AtomicU64, Ordering};

use super::Region;

impl Region {
    /// Claims the region's claim word if it is free or its holder is proven dead
    /// ([`Liveness::Dead`]); a holder whose liveness is unknown is waited for.
    pub(super) fn try_claim(&self) -> Result<Option<Claim<'_>>> {
        let me = process::current_identity()?.packed();
        let claim = &self.header().claim;
        // Relaxed: only a hint for which value to CAS from; the CAS below orders.
        let current = claim.load(Ordering::Relaxed);
        if current != 0 && process::packed_liveness(current) != Liveness::Dead {
            return Ok(None);
        }
        // Acquire: pairs with the Release store of 0 in `Claim::release` by the previous
        // holder, so we see everything it wrote (a published table, a READY header).
        // Taking over from a dead holder needs no more: it can write nothing further.
        match claim.compare_exchange(current, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(Some(Claim { word: claim, me })),
            Err(_) => Ok(None),
        }
    }

    pub(super) fn claim_until(&self, deadline: Deadline) -> Result<Claim<'_>> {
        loop {
            if let Some(c) = self.try_claim()? {
                return Ok(c);
            }
            if deadline.has_passed() {
                // Relaxed: a diagnostic reading for the message.
                let holder = self.header().claim.load(Ordering::Relaxed) as u32;
                return Err(Error::TimedOut(if holder == process::current_pid() {
                    "the region table is claimed by another thread of this process"
                } else {
                    "another process holds the region table's claim"
                }));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The packed identity holding the table claim (0 if free), and its liveness.
    pub fn claim_holder(&self) -> (u64, Liveness) {
        // Relaxed: a diagnostic reading.
        let w = self.header().claim.load(Ordering::Relaxed);
        (w, process::packed_liveness(w))
    }

    /// Frees a claim whose holder is dead (what `shmsync recover` does). Returns the
    /// packed identity it freed, if any; [`Error::ReadOnly`] on a read-only region.
    pub fn release_dead_claim(&self) -> Result<Option<u64>> {
        self.check_writable("release_dead_claim")?;
        let claim = &self.header().claim;
        // Relaxed: a hint for the CAS, which decides.
        let w = claim.load(Ordering::Relaxed);
        if w != 0 && process::packed_liveness(w) == Liveness::Dead {
            // Release: like `Claim::release`; a dead holder's unpublished writes are
            // harmless (they sit past `count`).
            if claim
                .compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Some(w));
            }
        }
        Ok(None)
    }
}

/// The region's claim, released on drop — also on error paths.
pub(super) struct Claim<'a> {
    word: &'a AtomicU64,
    /// Our packed identity, which the word holds while we hold the claim.
    me: u64,
}

impl Claim<'_> {
    pub(super) fn release(self) {}
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A CAS, not a store: if another process took the claim over (judging us dead,
        // which only a bug or a foreign namespace could cause), its claim stays its own.
        // Release: pairs with the Acquire CAS in `try_claim` of the next claimant, which
        // then sees the header/table/objects written under this claim.
        let _ = self
            .word
            .compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed);
    }
}
