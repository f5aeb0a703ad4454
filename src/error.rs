//! The crate's one error type.

use std::fmt;
use std::io;

use crate::kind::Kind;

/// Everything that can go wrong creating, opening or attaching to a shared object, and
/// what the primitives' own errors become when propagated with `?`.
///
/// Each primitive reports lock and wait outcomes in its own enum ([`crate::LockError`],
/// [`crate::RawLockError`], [`crate::SemError`], [`crate::SeqLockError`]), which the
/// caller matches on; [`crate::SemError`], [`crate::SeqLockError`] and
/// [`crate::RawLockError`] convert into this type with `From` (`TimedOut` becomes
/// [`Error::TimedOut`], `WouldBlock` [`Error::WouldBlock`], ...), and
/// [`crate::LockError`] through [`into_repair`](crate::LockError::into_repair) or
/// [`abandon`](crate::LockError::abandon), so an owner-died guard is never dropped by a
/// `?`.
///
/// ```
/// use shmsync::{Error, Semaphore};
///
/// fn take(sem: &Semaphore) -> shmsync::Result<()> {
///     sem.try_wait()?; // a SemError becomes an Error
///     Ok(())
/// }
/// let sem = Semaphore::new(0);
/// assert!(matches!(take(&sem), Err(Error::WouldBlock(_))));
/// sem.post()?;
/// take(&sem)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed: `op` on `target` (a name, key or path; may be empty).
    Os {
        /// The operation, e.g. `"shm_open"`.
        op: &'static str,
        /// What it was applied to.
        target: String,
        /// The OS error.
        source: io::Error,
    },
    /// A segment or object name was refused before any system call.
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An argument was out of range.
    InvalidArgument(&'static str),
    /// The memory holds no initialized object (all zero, or its initialization never
    /// finished).
    Uninitialized {
        /// The kind that was expected there.
        expected: Kind,
    },
    /// The memory does not start with shmsync's magic number.
    BadMagic {
        /// The word found instead.
        found: u32,
    },
    /// The header names another kind of object.
    WrongKind {
        /// The kind asked for.
        expected: Kind,
        /// The raw kind word found.
        found: u32,
    },
    /// The header was written by an incompatible build (another format version, arch,
    /// pointer width, libc or `pthread_mutex_t` size).
    FormatMismatch {
        /// Which part of the format word differs.
        field: &'static str,
        /// This build's value.
        expected: u64,
        /// The value in the header.
        found: u64,
    },
    /// A pointer was not aligned for the object placed there.
    Misaligned {
        /// The address.
        addr: usize,
        /// The alignment required.
        align: usize,
    },
    /// A segment or buffer is smaller than needed.
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The object was created in another PID namespace: thread ids recorded in robust
    /// locks would be misread here, so use is refused.
    PidNamespaceMismatch {
        /// The creator's pid-namespace inode.
        recorded: u64,
        /// Ours.
        current: u64,
    },
    /// A structure read from shared memory is inconsistent (corrupt or hostile).
    Corrupt(String),
    /// A bounded wait (e.g. for another process to finish sizing or initializing a
    /// segment) ran out of time.
    TimedOut(&'static str),
    /// A `try_*` call could not complete without waiting (the resource named is busy
    /// or exhausted right now). Nothing was changed; retry later or use the blocking
    /// form.
    WouldBlock(&'static str),
    /// A fixed-size table is full.
    Full(&'static str),
    /// A lock's previous owner died holding it and the caller chose not to repair the
    /// data ([`LockError::abandon`](crate::LockError::abandon)): the guard was dropped
    /// without [`make_consistent`](crate::OwnerDiedGuard::make_consistent), so the mutex
    /// is now not recoverable — every later lock fails until it is re-initialized.
    OwnerDied(&'static str),
    /// A counter would have passed its maximum (a semaphore's
    /// [`MAX_VALUE`](crate::Semaphore::MAX_VALUE)); nothing was changed.
    Overflow(&'static str),
    /// A named thing does not exist.
    NotFound(String),
    /// A named object exists with another type than the one asked for: another kind, or
    /// a value type with another declared name or layout (see [`crate::SharedType`]).
    TypeMismatch {
        /// The object's name.
        name: String,
        /// What the region's table records: the value type's name (when it is the one
        /// asked for), size, alignment and identity hash, and the object's kind and size.
        stored: String,
        /// The same for the type asked for.
        requested: String,
    },
    /// The segment belongs to another user; opening it was not asked for explicitly
    /// (the any-owner option: `Segment::*_open_any_owner`, `RegionOptions::any_owner`).
    ForeignOwner {
        /// What was opened.
        target: String,
        /// Its owner's uid.
        owner_uid: u32,
    },
    /// A SysV segment is owned by this user but was created by another, who keeps owner
    /// rights to it (a creator may hand `shm_perm.uid` to anyone with `IPC_SET`); opening
    /// it was not asked for explicitly (the any-owner option).
    ForeignCreator {
        /// What was opened.
        target: String,
        /// Its creator's uid (`shm_perm.cuid`).
        creator_uid: u32,
    },
    /// The segment is ours but its mode grants group or others some access, so other
    /// users may read or write it; opening it was not asked for explicitly (the
    /// any-owner option).
    OpenToOthers {
        /// What was opened.
        target: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A file or POSIX segment path names something other than a regular file (a
    /// symbolic link, FIFO, device, directory, socket); it was refused before anything
    /// read, wrote, truncated or mapped it.
    NotRegularFile {
        /// The path or name.
        target: String,
        /// What it is, e.g. `"a symbolic link"`, `"a FIFO"`, `"a character device"`.
        found: &'static str,
    },
    /// The region was opened read-only, and the call would write to it (or hand out an
    /// object whose methods write).
    ReadOnly {
        /// The region (its location, or `(anonymous region)`).
        target: String,
        /// The refused call.
        op: &'static str,
    },
}

impl Error {
    /// An [`Error::Os`] from `errno` right now.
    #[cold]
    #[allow(dead_code)]
    pub(crate) fn last_os(op: &'static str, target: impl Into<String>) -> Error {
        Error::Os {
            op,
            target: target.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// An [`Error::Os`] from a returned error number (pthread style).
    #[cold]
    pub(crate) fn from_errno(op: &'static str, target: impl Into<String>, errno: i32) -> Error {
        Error::Os {
            op,
            target: target.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The OS error number, if this is an [`Error::Os`].
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// How an ownership refusal says which opt-in accepts the segment.
const ANY_OWNER_HINT: &str = "refused unless opened with the any-owner option \
     (Segment::*_open_any_owner, RegionOptions::any_owner) if that is intended";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os { op, target, source } if target.is_empty() => {
                write!(f, "{op} failed: {source}")
            }
            Error::Os { op, target, source } => write!(f, "{op} on {target:?} failed: {source}"),
            Error::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Uninitialized { expected } => {
                write!(
                    f,
                    "no initialized {expected} here (zeroed or initialization never finished)"
                )
            }
            Error::BadMagic { found } => write!(f, "not a shmsync object: magic {found:#010x}"),
            Error::WrongKind { expected, found } => match Kind::from_raw(*found) {
                Some(k) => write!(f, "expected a {expected}, found a {k}"),
                None => write!(f, "expected a {expected}, found unknown kind {found}"),
            },
            Error::FormatMismatch {
                field,
                expected,
                found,
            } => write!(
                f,
                "format mismatch in {field}: this build has {expected}, the segment has {found}"
            ),
            Error::Misaligned { addr, align } => {
                write!(f, "address {addr:#x} is not aligned to {align} bytes")
            }
            Error::TooSmall { needed, available } => {
                write!(f, "too small: {needed} bytes needed, {available} available")
            }
            Error::PidNamespaceMismatch { recorded, current } => write!(
                f,
                "object was created in pid namespace {recorded}, this process is in {current}: \
                 robust locks cannot be shared across pid namespaces"
            ),
            Error::Corrupt(what) => write!(f, "corrupt shared memory: {what}"),
            Error::TimedOut(what) => write!(f, "timed out: {what}"),
            Error::Full(what) => write!(f, "full: {what}"),
            Error::WouldBlock(what) => write!(f, "would block: {what}"),
            Error::OwnerDied(what) => write!(
                f,
                "the previous owner of the {what} died holding it, and the caller abandoned \
                 the repair: the lock is now not recoverable until re-initialized"
            ),
            Error::Overflow(what) => write!(f, "overflow: {what}"),
            Error::NotFound(what) => write!(f, "not found: {what}"),
            Error::TypeMismatch {
                name,
                stored,
                requested,
            } => write!(
                f,
                "object {name:?} holds {stored}, but {requested} was asked for: the programs \
                 sharing it disagree on the type (its declared name, or its layout: size, \
                 alignment, field offsets)"
            ),
            Error::ForeignOwner { target, owner_uid } => write!(
                f,
                "{target:?} is owned by uid {owner_uid}, not by this process's effective \
                 uid; {ANY_OWNER_HINT}"
            ),
            Error::ForeignCreator {
                target,
                creator_uid,
            } => write!(
                f,
                "{target:?} is owned by this user but was created by uid {creator_uid} \
                 (SysV cuid), who keeps read-write access to it; {ANY_OWNER_HINT}"
            ),
            Error::OpenToOthers { target, mode } => write!(
                f,
                "{target:?} has mode {mode:04o}, which lets group or others access it \
                 (only owner bits are accepted); {ANY_OWNER_HINT}"
            ),
            Error::NotRegularFile { target, found } => write!(
                f,
                "{target:?} is {found}, not a regular file: refused before reading, writing, \
                 truncating or mapping it"
            ),
            Error::ReadOnly { target, op } => write!(
                f,
                "{op} refused: region {target:?} was opened read-only and this call would \
                 write to it (open it without RegionOptions::read_only to modify it)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Os { source, .. } => source.kind(),
            Error::NotFound(_) => io::ErrorKind::NotFound,
            Error::TimedOut(_) => io::ErrorKind::TimedOut,
            Error::WouldBlock(_) => io::ErrorKind::WouldBlock,
            Error::InvalidName { .. } | Error::InvalidArgument(_) | Error::Misaligned { .. } => {
                io::ErrorKind::InvalidInput
            }
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
