//! The real backend of the seqlock: the two copies live inline in the object, and
//! every access to them is an atomic word load or store through a raw pointer.

use core::mem::MaybeUninit;

use bytemuck::{AnyBitPattern, NoUninit};

use super::{payload_size_tag, Gap, SeqLock, Slot};
use crate::error::{Error, Result};
use crate::header::{check_placement, ObjectHeader};
use crate::kind::Kind;
use crate::raw_mutex::RawRobustMutex;
use crate::sync::{atomic_load_words, atomic_store_words, AtomicU64, UnsafeCell};

/// The two copies of the value, inline in the shared object.
pub(super) type Copies<T> = UnsafeCell<[Slot<T>; 2]>;

impl<T: AnyBitPattern> SeqLock<T> {
    /// Validates the seqlock another process placed at `ptr` with
    /// [`init_at`](Self::init_at).
    ///
    /// Fails with [`Error::Uninitialized`] on zeroed memory, [`Error::BadMagic`],
    /// [`Error::WrongKind`] or [`Error::FormatMismatch`] on foreign memory (including a
    /// seqlock created for a `T` of another size: field `"seqlock payload size"`), any
    /// error of [`RawRobustMutex::attach`] for its writer lock, and
    /// [`Error::Misaligned`] for a null or misaligned `ptr`. A seqlock created for
    /// another `T` *of the same size* cannot be told apart: its bytes are then read as
    /// this `T` (a logic error, not UB, since any bytes are a valid `T`).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<SeqLock<T>>()` bytes for
    ///   all of `'a`, in shared memory that stays mapped (and is not remapped elsewhere
    ///   in this process) for `'a`;
    /// - the bytes at `ptr` are being initialized by `init_at` concurrently (a header in
    ///   state READY is what makes attach safe; a `Region` guarantees this).
    pub unsafe fn attach<'a>(ptr: *const SeqLock<T>) -> Result<&'a SeqLock<T>> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and mapped for 'a (caller's promise); the
        // header and counter are atomics and the copies are only accessed atomically,
        // so a shared reference to memory other processes use is race-free.
        let this = unsafe { &*ptr };
        this.header.validate(Kind::SeqLock)?;
        this.check_payload_size()?;
        // SAFETY: the writer lock lies inside the validated object, which the caller
        // promised stays mapped for 'a.
        unsafe { RawRobustMutex::attach(&this.writer) }?;
        Ok(this)
    }
    fn check_payload_size(&self) -> Result<()> {
        let found = self.header.aux();
        let expected = payload_size_tag::<T>();
        if found != expected {
            return Err(Error::FormatMismatch {
                field: "seqlock payload size",
                expected: expected.into(),
                found: found.into(),
            });
        }
        Ok(())
    }

    /// Copies copy `version & 1` into `buf` with relaxed atomic word loads.
    #[inline]
    pub(super) fn load_copy(&self, version: u64, buf: &mut MaybeUninit<Slot<T>>) {
        let src = self.copy_ptr(version);
        // SAFETY: `src` is one whole, 8-aligned copy inside this object, which every
        // process accesses only with atomic word loads and stores; `buf` is a private,
        // 8-aligned slot of the same number of words.
        unsafe { atomic_load_words(src, buf.as_mut_ptr().cast::<u64>(), Slot::<T>::WORDS) };
    }

    /// The first word of copy `version & 1`.
    #[inline]
    fn copy_ptr(&self, version: u64) -> *mut u64 {
        let index = (version & 1) as usize;
        // `wrapping_add` stays inside the two-element array (index is 0 or 1).
        self.copies
            .with_mut(|copies| copies.cast::<Slot<T>>().wrapping_add(index).cast::<u64>())
    }
}

impl<T: AnyBitPattern + NoUninit> SeqLock<T> {
    /// Places a new seqlock holding `value` at `ptr` and returns a reference to it.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<SeqLock<T>>()` bytes for
    ///   all of `'a`, in memory that stays mapped (and is not remapped elsewhere in this
    ///   process) for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs, or any
    ///   process still uses an earlier object there.
    ///
    /// A null or misaligned `ptr` is reported as [`Error::Misaligned`] and a payload of
    /// 4 GiB or more as [`Error::InvalidArgument`], not UB.
    pub unsafe fn init_at<'a>(ptr: *mut SeqLock<T>, value: T) -> Result<&'a SeqLock<T>> {
        check_placement(ptr)?;
        if u32::try_from(core::mem::size_of::<T>()).is_err() {
            return Err(Error::InvalidArgument(
                "seqlock payloads must be smaller than 4 GiB",
            ));
        }
        // SAFETY: `ptr` is aligned (checked) and valid for writes, and nobody else
        // accesses it (caller's promise); the header and counter are written whole.
        unsafe {
            core::ptr::addr_of_mut!((*ptr).header).write(ObjectHeader::initializing_with_aux(
                Kind::SeqLock,
                payload_size_tag::<T>(),
            ));
            core::ptr::addr_of_mut!((*ptr).gap).write(Gap([0; 8]));
            core::ptr::addr_of_mut!((*ptr).seq).write(AtomicU64::new(0));
        }
        // SAFETY: the writer lock's bytes lie inside the object, valid, aligned (the
        // object is 8-aligned and the field's offset is a multiple of 8) and exclusive.
        unsafe { RawRobustMutex::init_at(core::ptr::addr_of_mut!((*ptr).writer)) }?;
        // SAFETY: every field is now initialized or (the copies) only ever accessed
        // through raw pointers with atomic word operations.
        let this = unsafe { &*ptr };
        let slot = Slot::from_value(value);
        for version in 0..2 {
            this.store_copy(version, &slot, Slot::<T>::WORDS);
        }
        this.header.publish();
        Ok(this)
    }

    /// A seqlock holding `value`, by value, to be moved into shared memory as a field
    /// of a larger `#[repr(C)]` value (the contract is under
    /// [`RobustMutex::new`](crate::RobustMutex::new)). Moving is sound until it is
    /// first written (its writer lock then links itself by address while held).
    ///
    /// # Errors
    ///
    /// Those of [`init_at`](Self::init_at), except misplacement.
    pub fn new(value: T) -> Result<SeqLock<T>> {
        // SAFETY: `init_at` initializes the whole object when it returns Ok, on storage
        // no other thread or process can reach; its never-locked writer lock holds no
        // address.
        unsafe { crate::header::init_by_value(|p| Self::init_at(p, value).map(drop)) }
    }
    /// Stores the first `words` words of `slot` into copy `version & 1`.
    #[inline]
    pub(super) fn store_copy(&self, version: u64, slot: &MaybeUninit<Slot<T>>, words: usize) {
        debug_assert!(words <= Slot::<T>::WORDS);
        // SAFETY: the destination is one whole, 8-aligned copy inside this object,
        // accessed by every process only with atomic word operations, and only by the
        // writer-lock holder (us) for stores; `slot` is a private, 8-aligned, fully
        // initialized slot (`from_value` zero-fills the tail) of at least `words` words.
        unsafe { atomic_store_words(self.copy_ptr(version), slot.as_ptr().cast::<u64>(), words) };
    }
    /// After `__test_write_partial`: nothing; the lock stays held by this thread, as a
    /// writer killed mid-write would leave it.
    #[cfg(feature = "test-hooks")]
    pub(super) fn end_partial_write(&self) {}
}
