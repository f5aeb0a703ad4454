//! The per-object header: magic, kind, format word and init state.
//!
//! Every headed object (mutex, seqlock, leased semaphore, region) starts with an
//! [`ObjectHeader`]. The semaphore and the condvar are headerless: every bit pattern is
//! a valid state for them, so a header could refuse nothing; a region's table records
//! their kind and type. The **format word** packs everything that must agree between two
//! processes for the bytes to mean the same thing to both — crate format version, target
//! arch, pointer width, libc flavour, endianness and `size_of::<pthread_mutex_t>()` — so
//! a 32-bit process, a musl build or a future incompatible version attaching to the
//! object gets [`Error::FormatMismatch`] naming the field, never undefined behaviour
//! (LMDB's `MDB_LOCK_FORMAT` is the model).
//!
//! All header fields are atomics: another process may be reading them while the
//! initializer writes them. The initializer writes everything, then publishes with a
//! Release store of `state = READY`; validators load `state` with Acquire first.

use core::fmt;

use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// `"SHMS"` read as a little-endian u32: the first word of every headed object.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SHMS");

/// Bumped whenever any shared layout or protocol changes incompatibly (3: a
/// reader-writer lock's readers wait on its writer mutex, and only that mutex's holder
/// stores to its state word).
pub const FORMAT_VERSION: u64 = 3;

/// Init state: never initialized (all-zero memory).
pub(crate) const STATE_UNINIT: u32 = 0;
/// Init state: an initializer is writing the object.
pub(crate) const STATE_INITIALIZING: u32 = 1;
/// Init state: fully initialized and published.
pub const STATE_READY: u32 = 2;

/// The fields of the format word, in order, with their bit offset and width.
const FORMAT_FIELDS: [(&str, u32, u32); 6] = [
    ("format version", 0, 8),
    ("target arch", 8, 8),
    ("pointer width", 16, 8),
    ("libc flavour", 24, 8),
    ("size of pthread_mutex_t", 32, 16),
    ("endianness", 48, 8),
];

const fn arch_code() -> u64 {
    if cfg!(target_arch = "x86_64") {
        1
    } else if cfg!(target_arch = "aarch64") {
        2
    } else if cfg!(target_arch = "riscv64") {
        3
    } else if cfg!(target_arch = "x86") {
        4
    } else if cfg!(target_arch = "arm") {
        5
    } else if cfg!(target_arch = "powerpc64") {
        6
    } else if cfg!(target_arch = "s390x") {
        7
    } else {
        0xff
    }
}

const fn libc_code() -> u64 {
    if cfg!(target_env = "gnu") {
        1
    } else if cfg!(target_env = "musl") {
        2
    } else {
        3
    }
}

/// This build's format word.
pub const FORMAT: u64 = FORMAT_VERSION
    | arch_code() << 8
    | (core::mem::size_of::<usize>() as u64) << 16
    | libc_code() << 24
    | (core::mem::size_of::<libc::pthread_mutex_t>() as u64) << 32
    | (if cfg!(target_endian = "little") { 1 } else { 2 }) << 48;

/// Compares a format word found in shared memory with this build's, naming the first
/// field that differs.
pub(crate) fn check_format(found: u64) -> Result<()> {
    if found == FORMAT {
        return Ok(());
    }
    for (field, shift, width) in FORMAT_FIELDS {
        let mask = (1u64 << width) - 1;
        let (e, f) = ((FORMAT >> shift) & mask, (found >> shift) & mask);
        if e != f {
            return Err(Error::FormatMismatch {
                field,
                expected: e,
                found: f,
            });
        }
    }
    Err(Error::FormatMismatch {
        field: "reserved bits",
        expected: FORMAT >> 56,
        found: found >> 56,
    })
}

/// The header at the start of every headed object. 24 bytes, 8-aligned.
///
/// All zero is `STATE_UNINIT` with no magic: attach refuses it as
/// [`Error::Uninitialized`].
#[repr(C)]
pub struct ObjectHeader {
    magic: AtomicU32,
    kind: AtomicU32,
    format: AtomicU64,
    state: AtomicU32,
    /// A 32-bit word whose meaning depends on the kind (the mutex records the low 32
    /// bits of its creator's pid-namespace inode here); zero when unused.
    aux: AtomicU32,
}

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(ObjectHeader, [u8; 24]);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(core::mem::align_of::<ObjectHeader>(), 8);

impl ObjectHeader {
    /// A header for `kind` in state INITIALIZING: write it, initialize the object body,
    /// then call [`publish`](Self::publish).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn initializing(kind: Kind) -> ObjectHeader {
        ObjectHeader::initializing_with_aux(kind, 0)
    }

    /// As [`initializing`](Self::initializing), with the kind-specific `aux` word.
    pub fn initializing_with_aux(kind: Kind, aux: u32) -> ObjectHeader {
        ObjectHeader {
            magic: AtomicU32::new(MAGIC),
            kind: AtomicU32::new(kind as u32),
            format: AtomicU64::new(FORMAT),
            state: AtomicU32::new(STATE_INITIALIZING),
            aux: AtomicU32::new(aux),
        }
    }

    /// The kind-specific word.
    pub fn aux(&self) -> u32 {
        // Relaxed: written before the Release publish, read after `validate`'s Acquire
        // load (or as a diagnostic).
        self.aux.load(Ordering::Relaxed)
    }

    /// The raw kind word (for diagnostics).
    #[cfg(feature = "test-hooks")]
    pub fn raw_kind(&self) -> u32 {
        // Relaxed: a diagnostic reading.
        self.kind.load(Ordering::Relaxed)
    }

    /// Rewrites a header *in place* with atomic stores, in state INITIALIZING, for
    /// objects whose header other processes may be polling while it is (re)initialized
    /// (a region). Call [`publish`](Self::publish) when the body is ready.
    pub fn begin_init(&self, kind: Kind, aux: u32) {
        // Relaxed (all): these become visible to validators only through the Release
        // store in `publish`; a validator that reads them earlier sees state
        // INITIALIZING (or UNINIT) and does not use them.
        self.state.store(STATE_INITIALIZING, Ordering::Relaxed);
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.kind.store(kind as u32, Ordering::Relaxed);
        self.format.store(FORMAT, Ordering::Relaxed);
        self.aux.store(aux, Ordering::Relaxed);
    }

    /// Marks the object READY.
    pub fn publish(&self) {
        // Release: pairs with the Acquire load in `validate` (in this or any other
        // process), so whoever sees READY also sees the body written before this store.
        self.state.store(STATE_READY, Ordering::Release);
    }

    /// Checks that this header heads a READY object of `kind` with this build's format.
    pub fn validate(&self, kind: Kind) -> Result<()> {
        // Acquire: pairs with the Release store in `publish`; the fields below and the
        // object body were written before it.
        let state = self.state.load(Ordering::Acquire);
        // Relaxed: ordered after the Acquire load above; written before the publish.
        let magic = self.magic.load(Ordering::Relaxed);
        // Not READY, and either never touched or ours: an initializer is writing it (or
        // died doing so), one field at a time. Kind and format may be half written, so
        // they are not judged until READY.
        if matches!(state, STATE_UNINIT | STATE_INITIALIZING) && (magic == 0 || magic == MAGIC) {
            return Err(Error::Uninitialized { expected: kind });
        }
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        // Relaxed: as for `magic`.
        let found_kind = self.kind.load(Ordering::Relaxed);
        if found_kind != kind as u32 {
            return Err(Error::WrongKind {
                expected: kind,
                found: found_kind,
            });
        }
        // Relaxed: as for `magic`.
        check_format(self.format.load(Ordering::Relaxed))?;
        match state {
            STATE_READY => Ok(()),
            other => Err(Error::Corrupt(format!("{kind} header state {other}"))),
        }
    }

    /// The raw init state (for diagnostics).
    pub fn state(&self) -> u32 {
        // Relaxed: a diagnostic reading; nothing is read on the strength of it.
        self.state.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for ObjectHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed loads: a diagnostic snapshot only.
        f.debug_struct("ObjectHeader")
            .field(
                "magic",
                &format_args!("{:#010x}", self.magic.load(Ordering::Relaxed)),
            )
            .field("kind", &self.kind.load(Ordering::Relaxed))
            .field(
                "format",
                &format_args!("{:#018x}", self.format.load(Ordering::Relaxed)),
            )
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// Builds a `T` by value with its in-place initializer: `init` runs on this frame's
/// own uninitialized storage, which is then moved out. For the by-value constructors
/// of objects that hold no address until first used (the moved value was never locked,
/// waited on or posted).
///
/// # Safety
///
/// Behavior is undefined if:
/// - `init` returns `Ok` without having fully initialized a valid `T` at its pointer;
/// - the initialized `T` records its own address or is otherwise unsound to move.
#[cfg(not(shmsync_loom))]
pub(crate) unsafe fn init_by_value<T>(init: impl FnOnce(*mut T) -> Result<()>) -> Result<T> {
    let mut slot = core::mem::MaybeUninit::<T>::uninit();
    init(slot.as_mut_ptr())?;
    // SAFETY: `init` returned Ok, so it initialized a whole `T` (the caller's promise),
    // which may move (the caller's promise).
    Ok(unsafe { slot.assume_init() })
}

/// Checks that `ptr` is non-null and aligned for `T`.
pub(crate) fn check_placement<T>(ptr: *const T) -> Result<()> {
    let align = core::mem::align_of::<T>();
    if ptr.is_null() || (ptr as usize) % align != 0 {
        return Err(Error::Misaligned {
            addr: ptr as usize,
            align,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_mismatch_names_the_field() {
        assert!(check_format(FORMAT).is_ok());
        let other_mutex_size = (FORMAT & !(0xffff << 32)) | (24u64 << 32);
        match check_format(other_mutex_size) {
            Err(Error::FormatMismatch {
                field,
                expected,
                found,
            }) => {
                assert_eq!(field, "size of pthread_mutex_t");
                assert_eq!(
                    expected,
                    core::mem::size_of::<libc::pthread_mutex_t>() as u64
                );
                assert_eq!(found, 24);
            }
            other => panic!("{other:?}"),
        }
        match check_format(FORMAT ^ (0x7 << 16)) {
            Err(Error::FormatMismatch { field, .. }) => assert_eq!(field, "pointer width"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validate_reports_each_failure() {
        let zero: ObjectHeader = bytemuck_zeroed();
        assert!(matches!(
            zero.validate(Kind::Mutex),
            Err(Error::Uninitialized { .. })
        ));
        let h = ObjectHeader::initializing(Kind::Mutex);
        assert!(matches!(
            h.validate(Kind::Mutex),
            Err(Error::Uninitialized { .. })
        ));
        // Half written (magic, no kind yet): still "uninitialized", never WrongKind.
        h.kind.store(0, Ordering::Relaxed);
        assert!(matches!(
            h.validate(Kind::Mutex),
            Err(Error::Uninitialized { .. })
        ));
        h.kind.store(Kind::Mutex as u32, Ordering::Relaxed);
        h.publish();
        assert!(h.validate(Kind::Mutex).is_ok());
        assert!(matches!(
            h.validate(Kind::SeqLock),
            Err(Error::WrongKind {
                expected: Kind::SeqLock,
                found: 1
            })
        ));
        h.magic.store(0xdead_beef, Ordering::Relaxed);
        assert!(matches!(
            h.validate(Kind::Mutex),
            Err(Error::BadMagic { found: 0xdead_beef })
        ));
    }

    fn bytemuck_zeroed() -> ObjectHeader {
        ObjectHeader {
            magic: AtomicU32::new(0),
            kind: AtomicU32::new(0),
            format: AtomicU64::new(0),
            state: AtomicU32::new(0),
            aux: AtomicU32::new(0),
        }
    }
}
