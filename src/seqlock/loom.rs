//! The loom backend of the seqlock: the copies are boxed slices of loom atomics (loom
//! cannot model atomics in foreign memory), so the model checker sees every word.

use core::marker::PhantomData;
use core::mem::MaybeUninit;

use bytemuck::{AnyBitPattern, NoUninit};

use super::{payload_size_tag, Gap, SeqLock, Slot};
use crate::header::ObjectHeader;
use crate::kind::Kind;
use crate::raw_mutex::RawRobustMutex;
use crate::sync::{atomic_load_words, atomic_store_words, AtomicU64};

/// The two copies of the value, each a boxed slice of `Slot::<T>::WORDS` loom atomics.
pub(super) struct Copies<T> {
    words: [Box<[AtomicU64]>; 2],
    _t: PhantomData<T>,
}

impl<T: AnyBitPattern> SeqLock<T> {
    #[inline]
    pub(super) fn load_copy(&self, version: u64, buf: &mut MaybeUninit<Slot<T>>) {
        // SAFETY: `buf` is a private, 8-aligned slot of `Slot::<T>::WORDS` words, the
        // length of every copy.
        unsafe {
            atomic_load_words(
                &self.copies.words[(version & 1) as usize],
                buf.as_mut_ptr().cast(),
            )
        };
    }
}

impl<T: AnyBitPattern + NoUninit> SeqLock<T> {
    /// A model-checking constructor (loom builds only).
    pub fn new(value: T) -> SeqLock<T> {
        let header = ObjectHeader::initializing_with_aux(Kind::SeqLock, payload_size_tag::<T>());
        header.publish();
        let copy = || {
            (0..Slot::<T>::WORDS)
                .map(|_| AtomicU64::new(0))
                .collect::<Box<[_]>>()
        };
        let this = SeqLock {
            header,
            writer: RawRobustMutex::new(),
            gap: Gap([0; 8]),
            seq: AtomicU64::new(0),
            copies: Copies {
                words: [copy(), copy()],
                _t: PhantomData,
            },
        };
        let slot = Slot::from_value(value);
        for version in 0..2 {
            this.store_copy(version, &slot, Slot::<T>::WORDS);
        }
        this
    }

    #[inline]
    pub(super) fn store_copy(&self, version: u64, slot: &MaybeUninit<Slot<T>>, words: usize) {
        // SAFETY: `slot` is a private, 8-aligned, fully initialized slot of
        // `Slot::<T>::WORDS >= words` words.
        unsafe {
            atomic_store_words(
                &self.copies.words[(version & 1) as usize],
                slot.as_ptr().cast(),
                words,
            )
        };
    }

    /// After `__test_write_partial`: abandons the lock, the model of the holder's death.
    #[cfg(feature = "test-hooks")]
    pub(super) fn end_partial_write(&self) {
        // SAFETY: held by this thread (`__test_write_partial` locked it).
        unsafe { self.writer.abandon() };
    }
}
