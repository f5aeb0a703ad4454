//! [`Region`]: a segment with a table of named objects and race-free first
//! initialization across processes.
//!
//! # Layout
//!
//! ```text
//! 0      RegionHeader (128 bytes): ObjectHeader(Kind::Region), claim word, size,
//!        capacity, count, next_free, data_start, creator identity
//! 128    capacity × Entry (80 bytes each): kind, align, offset, size, type hash, name
//! data_start (page aligned)   objects, bump-allocated, each aligned for its type
//! ```
//!
//! Every field is an atomic, every reference between objects is an offset from the
//! region's base, and nothing read from the segment is trusted: offsets, sizes, counts,
//! names and states are validated before use, so a corrupt or hostile segment yields an
//! [`Error`], never a panic or an out-of-bounds access. (One thing no validation can
//! prevent: a peer that *truncates* a POSIX or file segment makes accesses to the lost
//! pages fault with SIGBUS. memfd segments are sealed against shrinking.)
//!
//! # Initialization without races
//!
//! One word, `claim`, serializes the region's initialization and every table append. It
//! holds 0 (free) or the claimant's packed identity (pid + start time, see
//! [`ProcessIdentity::packed`]). Claiming is one compare-and-swap; a claimant that died
//! (its pid gone or reused) is taken over by the next process with another CAS, so a
//! crash during initialization never wedges the region. Waiting for a live claimant is
//! bounded by a deadline.
//!
//! - The region: `UNINIT → INITIALIZING → READY` in its [`ObjectHeader`], written under
//!   the claim and published with Release; openers read it with Acquire. A takeover
//!   rewrites the header and an empty table from scratch.
//! - Each object: it is allocated, initialized and *then* published by incrementing the
//!   table's `count` (Release) — all under the claim. An object is therefore either
//!   absent from the table (uninitialized, or being initialized by the claimant) or
//!   present and READY: a half-initialized object is never handed out, and there are
//!   never two initializers. A claimant killed mid-initialization leaves an unpublished
//!   slot (and at worst some unreachable space) that the next claimant reuses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::header::{Kind, ObjectHeader, STATE_READY};
use crate::process::{self, Liveness, ProcessIdentity};
use crate::segment::{OpenSpec, OwnerCheck, Segment};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Bytes of the region header.
const HEADER_SIZE: usize = 128;
/// Bytes of one table entry.
const ENTRY_SIZE: usize = 80;
/// Longest object name, in bytes (UTF-8).
pub const MAX_NAME_LEN: usize = 40;
/// Table capacity used by [`Region::create`] (fills the first page).
pub const DEFAULT_CAPACITY: u32 = 49;
/// Largest table capacity accepted from a caller or from a segment.
pub const MAX_CAPACITY: u32 = 4096;
/// Data starts on a page boundary.
const PAGE: u64 = 4096;
/// How long an opener waits for another process's initialization or table append.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

#[repr(C)]
struct RegionHeader {
    object: ObjectHeader,
    /// 0, or the packed identity of the process initializing or appending.
    claim: AtomicU64,
    /// Size of the region in bytes, as created.
    size: AtomicU64,
    capacity: AtomicU32,
    /// Published entries (the commit point of an append).
    count: AtomicU32,
    /// First free byte of the data area.
    next_free: AtomicU64,
    /// Offset of the data area (after the table, page aligned).
    data_start: AtomicU64,
    creator_pid: AtomicU64,
    creator_start: AtomicU64,
    creator_ns: AtomicU64,
    _reserved: [AtomicU64; 5],
}

#[repr(C)]
struct Entry {
    kind: AtomicU32,
    align: AtomicU32,
    offset: AtomicU64,
    size: AtomicU64,
    type_hash: AtomicU64,
    name_len: AtomicU32,
    _pad: AtomicU32,
    name: [AtomicU64; MAX_NAME_LEN / 8],
}

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(RegionHeader, [u8; HEADER_SIZE]);
#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(Entry, [u8; ENTRY_SIZE]);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert!(
    HEADER_SIZE + DEFAULT_CAPACITY as usize * ENTRY_SIZE <= PAGE as usize
);

/// A type that can live in a [`Region`] under a name.
///
/// # Safety
///
/// Behavior is undefined if an implementation:
/// - has a `KIND` other than the kind of header (if any) `init_at` writes;
/// - has an `init_at` that does not fully initialize a valid `Self` at `ptr`, or an
///   `attach` that returns a reference without validating what it can of the bytes
///   (a type for which every bit pattern is valid needs no validation);
/// - is not safe to share between processes (no pointers, no process-local state).
pub unsafe trait Shared: Sync + Sized {
    /// The kind recorded in the table.
    const KIND: Kind;
    /// What `init_at` needs (the initial value).
    type Init;

    /// Initializes a `Self` in place.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for writes of `size_of::<Self>()` bytes, aligned, for `'a`;
    /// - any other thread or process accesses the bytes during the call.
    unsafe fn init_at<'a>(ptr: *mut Self, init: Self::Init) -> Result<&'a Self>;

    /// Validates and borrows a `Self` another process initialized.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<Self>()` bytes, aligned,
    ///   for `'a`;
    /// - the object is being initialized concurrently.
    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self>;
}

// SAFETY: `init_at` places a full RawRobustMutex with a Kind::Mutex header; `attach`
// validates header, format and pid namespace; the type holds no pointers.
unsafe impl Shared for crate::RawRobustMutex {
    const KIND: Kind = Kind::Mutex;
    type Init = ();

    unsafe fn init_at<'a>(ptr: *mut Self, _init: ()) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::RawRobustMutex::init_at(ptr) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::RawRobustMutex::attach(ptr) }
    }
}

// SAFETY: `RobustMutex::init_at` places a full mutex (Kind::Mutex header first) and its
// value; `attach` validates header, format and pid namespace; T is AnyBitPattern (no
// pointers owed, any bytes valid).
unsafe impl<T: bytemuck::AnyBitPattern + Send> Shared for crate::RobustMutex<T> {
    const KIND: Kind = Kind::Mutex;
    type Init = T;

    unsafe fn init_at<'a>(ptr: *mut Self, init: T) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::RobustMutex::init_at(ptr, init) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::RobustMutex::attach(ptr) }
    }
}

// SAFETY: a condvar is one sequence word (plus a sleeper count) for which every bit
// pattern is valid; `init_at` writes it whole; no pointers.
unsafe impl Shared for crate::Condvar {
    const KIND: Kind = Kind::Condvar;
    type Init = ();

    unsafe fn init_at<'a>(ptr: *mut Self, _init: ()) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::Condvar::init_at(ptr) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::Condvar::attach(ptr) }
    }
}

// SAFETY: a semaphore is two u32 words for which every bit pattern is valid; `init_at`
// writes both; no pointers.
unsafe impl Shared for crate::Semaphore {
    const KIND: Kind = Kind::Semaphore;
    type Init = u32;

    unsafe fn init_at<'a>(ptr: *mut Self, value: u32) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::Semaphore::init_at(ptr, value) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::Semaphore::attach(ptr) }
    }
}

// SAFETY: `init_at` places the header (Kind::LeasedSemaphore), its robust table lock and
// an empty table; `attach` validates header, slot count and lock; no pointers.
unsafe impl<const SLOTS: usize> Shared for crate::LeasedSemaphore<SLOTS> {
    const KIND: Kind = Kind::LeasedSemaphore;
    /// The number of permits.
    type Init = u32;

    unsafe fn init_at<'a>(ptr: *mut Self, capacity: u32) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::LeasedSemaphore::init_at(ptr, capacity) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::LeasedSemaphore::attach(ptr) }
    }
}

// SAFETY: `init_at` places the header (Kind::SeqLock), counter, writer lock and both
// copies; `attach` validates header, payload size and writer lock; T is AnyBitPattern.
unsafe impl<T: bytemuck::AnyBitPattern + bytemuck::NoUninit + Send> Shared for crate::SeqLock<T> {
    const KIND: Kind = Kind::SeqLock;
    type Init = T;

    unsafe fn init_at<'a>(ptr: *mut Self, value: T) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::SeqLock::init_at(ptr, value) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::SeqLock::attach(ptr) }
    }
}

// SAFETY: `init_at` places the header (Kind::RwLock, slot count), state words, writer
// mutex, empty slot table and the value; `attach` validates header, slot count and
// writer mutex; T is AnyBitPattern (no pointers owed, any bytes valid).
unsafe impl<T: bytemuck::AnyBitPattern + Send + Sync, const SLOTS: usize> Shared
    for crate::RobustRwLock<T, SLOTS>
{
    const KIND: Kind = Kind::RwLock;
    type Init = T;

    unsafe fn init_at<'a>(ptr: *mut Self, value: T) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::RobustRwLock::init_at(ptr, value) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { crate::RobustRwLock::attach(ptr) }
    }
}

/// A stable hash of a type's name, size and alignment (FNV-1a), recorded in the table
/// so `get::<WrongType>` is an error. Type names come from `core::any::type_name`, which
/// is the same for the same crate versions and compiler; processes built from different
/// versions of a type's crate see a mismatch, which is the safe answer.
pub fn type_hash<T>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let name = core::any::type_name::<T>().as_bytes();
    let size = (core::mem::size_of::<T>() as u64).to_le_bytes();
    let align = (core::mem::align_of::<T>() as u64).to_le_bytes();
    for &b in name.iter().chain(&size).chain(&align) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where a region lives, parsed from the names the `shmsync` tool accepts:
/// `/name` (POSIX shared memory: one leading slash, no other), `sysv:KEY` (decimal or
/// `0x` hex), or a file path (anything else with a `/`, or `file:PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// POSIX shared memory.
    Posix(String),
    /// SysV shared memory by key.
    SysV(libc::key_t),
    /// A file.
    File(PathBuf),
}

impl Location {
    /// Parses a region name.
    pub fn parse(s: &str) -> Result<Location> {
        let bad = |reason| Error::InvalidName {
            name: s.to_owned(),
            reason,
        };
        if let Some(key) = s.strip_prefix("sysv:") {
            let parsed = match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).map(|k| k as libc::key_t),
                None => key.parse::<libc::key_t>(),
            };
            return match parsed {
                Ok(0) => Err(bad(
                    "SysV key 0 is IPC_PRIVATE and cannot be opened by name",
                )),
                Ok(k) => Ok(Location::SysV(k)),
                Err(_) => Err(bad("a SysV key is a decimal or 0x-hex 32-bit number")),
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(bad("empty file path"));
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        if s.starts_with('/') && !s[1..].contains('/') {
            crate::segment::validate_posix_name(s)?;
            return Ok(Location::Posix(s.to_owned()));
        }
        if s.contains('/') {
            return Ok(Location::File(PathBuf::from(s)));
        }
        Err(bad(
            "expected /NAME (POSIX), sysv:KEY, or a file path containing '/'",
        ))
    }

    fn create_segment(&self, size: usize, mode: libc::mode_t) -> Result<Segment> {
        match self {
            Location::Posix(name) => Segment::posix_create_with_mode(name, size, mode),
            Location::SysV(key) => Segment::sysv_create_with_mode(*key, size, mode),
            Location::File(path) => Segment::file_create_with_mode(path, size, mode),
        }
    }

    /// Opens the existing segment as `spec` says (with `size_if_unsized`, an object its
    /// creator abandoned at size 0 is sized; see [`Segment::posix_open_or_size`]; SysV
    /// segments get their size at creation).
    fn open_segment(&self, spec: OpenSpec) -> Result<Segment> {
        match self {
            Location::Posix(name) => Segment::posix_open_checked(name, spec),
            Location::SysV(key) => Segment::sysv_open_checked(*key, spec),
            Location::File(path) => Segment::file_open_checked(path, spec),
        }
    }

    /// Removes the name (mappings stay valid until unmapped).
    pub fn remove(&self) -> Result<()> {
        match self {
            Location::Posix(name) => Segment::posix_unlink(name),
            Location::SysV(key) => Segment::sysv_remove(*key),
            Location::File(path) => std::fs::remove_file(path).map_err(|source| Error::Os {
                op: "unlink",
                target: path.display().to_string(),
                source,
            }),
        }
    }
}

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Location::Posix(n) => f.write_str(n),
            Location::SysV(k) => write!(f, "sysv:{:#x}", *k as u32),
            Location::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A table entry, as read and validated from the segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The object's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Offset from the region's base.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Alignment in bytes.
    pub align: u32,
    /// [`type_hash`] of its Rust type.
    pub type_hash: u64,
}

/// A mapped region: a [`Segment`] whose first page holds a header and a table of named
/// objects. References to objects borrow the `Region`, so the segment cannot be unmapped
/// while any is in use (in particular, while a lock in it is held).
///
/// ```
/// use shmsync::{Region, RawRobustMutex, Segment};
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// let lock = region.get_or_init::<RawRobustMutex>("lock", ())?;
/// assert!(lock.try_lock().is_ok());
/// # unsafe { lock.unlock() };
/// // A second lookup finds the same object; the wrong type is an error.
/// assert!(core::ptr::eq(lock, region.get::<RawRobustMutex>("lock")?));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Debug)]
pub struct Region {
    seg: Segment,
    location: Option<Location>,
    /// Opened read-only: nothing is ever written through this value.
    read_only: bool,
}

/// Options for opening or creating a region: the fields, or the builder methods of the
/// same names.
///
/// An observer that must never write and may look at another user's region (what
/// `shmsync inspect` does):
///
/// ```
/// use shmsync::region::{Location, RegionOptions};
/// use shmsync::{Error, RawRobustMutex, Region};
/// # let loc = Location::parse(&format!("/shmsync-doc-ro-{}", std::process::id()))?;
/// # let _creator = Region::create(&loc, 1 << 16)?;
/// let opts = RegionOptions::new().read_only(true).any_owner(true);
/// let region = Region::open_with(&loc, opts)?;
/// assert!(region.is_read_only());
/// assert!(region.entries()?.is_empty());
/// assert!(matches!(region.get::<RawRobustMutex>("lock"), Err(Error::ReadOnly { .. })));
/// # Region::remove(&loc)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RegionOptions {
    /// Table capacity when this call creates the region.
    pub capacity: u32,
    /// How long to wait for another process's initialization or table append.
    pub wait: Duration,
    /// Whether opening an uninitialized region initializes it (or takes over a dead
    /// initializer). Off for observers such as the `shmsync` tool, which must not write:
    /// they get [`Error::Uninitialized`] after waiting `wait` for an initializer.
    pub initialize: bool,
    /// Open and map the segment read-only (`O_RDONLY` or `SHM_RDONLY`, `PROT_READ`): the
    /// region is never written — no initialization, no claim, no table append — and every
    /// call that would write, or would hand out an object whose methods write
    /// ([`Region::get`], [`Region::get_or_init`], [`Region::release_dead_claim`]), fails
    /// with [`Error::ReadOnly`]. Needs only read permission. Only for opening: creating
    /// read-only is [`Error::InvalidArgument`].
    pub read_only: bool,
    /// Accept a segment whatever its owner, SysV creator and mode (the
    /// `*_open_any_owner` segment opens). Off by default: then a segment another user
    /// owns or created ([`Error::ForeignOwner`], [`Error::ForeignCreator`]: someone may
    /// have planted it under the name you expected) or that group or others may access
    /// ([`Error::OpenToOthers`]) is refused — including one made with a
    /// [`mode`](Self#structfield.mode) that shares it with other users.
    #[doc = crate::segment::any_owner_warning!()]
    pub any_owner: bool,
    /// Permission bits for a segment this call creates (default 0600; POSIX and file
    /// segments are subject to the umask, SysV segments are not).
    pub mode: libc::mode_t,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            capacity: DEFAULT_CAPACITY,
            wait: DEFAULT_WAIT,
            initialize: true,
            read_only: false,
            any_owner: false,
            mode: crate::segment::DEFAULT_MODE,
        }
    }
}

/// One builder method per [`RegionOptions`] field, named after it.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`", stringify!($field), "`](Self#structfield.", stringify!($field), ").")]
        $(#[$doc])*
        pub fn $field(mut self, $field: $ty) -> RegionOptions {
            self.$field = $field;
            self
        }
    )*};
}

impl RegionOptions {
    /// The defaults: capacity [`DEFAULT_CAPACITY`], wait [`DEFAULT_WAIT`], initializing,
    /// read-write, own segments only, mode 0600.
    pub fn new() -> RegionOptions {
        RegionOptions::default()
    }

    setters! {
        capacity: u32,
        wait: Duration,
        initialize: bool,
        read_only: bool,
        #[doc = crate::segment::any_owner_warning!()]
        any_owner: bool,
        mode: libc::mode_t,
    }

    /// How the segment is opened.
    fn open_spec(&self, size_if_unsized: Option<usize>) -> OpenSpec {
        OpenSpec {
            owner: if self.any_owner {
                OwnerCheck::Any
            } else {
                OwnerCheck::MustBeOurs
            },
            read_only: self.read_only,
            size_if_unsized,
        }
    }

    fn refuse_read_only_create(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::InvalidArgument(
                "a region cannot be created read-only (RegionOptions::read_only is for opening)",
            ));
        }
        Ok(())
    }
}

/// Bytes a region with `capacity` entries needs before its data area.
pub fn data_start_for(capacity: u32) -> u64 {
    let table_end = HEADER_SIZE as u64 + u64::from(capacity) * ENTRY_SIZE as u64;
    table_end.div_ceil(PAGE) * PAGE
}

impl Region {
    /// Creates a new region of `size` bytes at `location` (exclusive create, mode 0600)
    /// and initializes it.
    pub fn create(location: &Location, size: usize) -> Result<Region> {
        Region::create_with(location, size, RegionOptions::default())
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(location: &Location, size: usize, opts: RegionOptions) -> Result<Region> {
        opts.refuse_read_only_create()?;
        check_capacity(opts.capacity, size)?;
        let seg = location.create_segment(size, opts.mode)?;
        Region::ready(seg, Some(location), false, opts)
    }

    /// The region in `seg`, once [`ensure_ready`](Self::ensure_ready) succeeds.
    fn ready(
        seg: Segment,
        location: Option<&Location>,
        read_only: bool,
        opts: RegionOptions,
    ) -> Result<Region> {
        let region = Region {
            seg,
            location: location.cloned(),
            read_only,
        };
        region.ensure_ready(opts)?;
        Ok(region)
    }

    /// Opens an existing region (waiting up to [`DEFAULT_WAIT`] for its initializer; a
    /// dead initializer is taken over).
    pub fn open(location: &Location) -> Result<Region> {
        Region::open_with(location, RegionOptions::default())
    }

    /// [`open`](Self::open) with options; see [`RegionOptions`] for read-only and
    /// any-owner opens.
    pub fn open_with(location: &Location, opts: RegionOptions) -> Result<Region> {
        let seg = location.open_segment(opts.open_spec(None))?;
        Region::ready(seg, Some(location), opts.read_only, opts)
    }

    /// Opens the region at `location`, creating it with `size` bytes if it does not
    /// exist. Any number of processes may race here: exactly one creates the segment,
    /// exactly one initializes it, and all end with the same READY region.
    pub fn open_or_create(location: &Location, size: usize) -> Result<Region> {
        Region::open_or_create_with(location, size, RegionOptions::default())
    }

    /// [`open_or_create`](Self::open_or_create) with options.
    pub fn open_or_create_with(
        location: &Location,
        size: usize,
        opts: RegionOptions,
    ) -> Result<Region> {
        opts.refuse_read_only_create()?;
        check_capacity(opts.capacity, size)?;
        let deadline = Deadline::after(opts.wait);
        loop {
            match Region::create_with(location, size, opts) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                other => return other,
            }
            let opened = location
                .open_segment(opts.open_spec(Some(size)))
                .and_then(|seg| Region::ready(seg, Some(location), false, opts));
            match opened {
                // Removed between our create and open: try again.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !deadline.has_passed() => {}
                other => return other,
            }
        }
    }

    /// Uses an already mapped segment (anonymous, memfd, …) as a region, initializing it
    /// if it is all zero.
    pub fn from_segment(seg: Segment) -> Result<Region> {
        Region::from_segment_with(seg, RegionOptions::default())
    }

    /// [`from_segment`](Self::from_segment) with options. A [read-only
    /// segment](Segment::is_read_only) makes a read-only region whatever `opts` says.
    pub fn from_segment_with(seg: Segment, opts: RegionOptions) -> Result<Region> {
        let read_only = opts.read_only || seg.is_read_only();
        Region::ready(seg, None, read_only, opts)
    }

    /// Gives the segment back (unmapping nothing).
    pub fn into_segment(self) -> Segment {
        self.seg
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Where it lives, if it has a name.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// Whether the region was opened read-only ([`RegionOptions::read_only`], or a
    /// read-only segment): then nothing is ever written through it.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Fails with [`Error::ReadOnly`] naming `op` if the region is read-only.
    #[inline]
    pub(crate) fn check_writable(&self, op: &'static str) -> Result<()> {
        if self.read_only {
            return Err(self.read_only_error(op));
        }
        Ok(())
    }

    #[cold]
    fn read_only_error(&self, op: &'static str) -> Error {
        Error::ReadOnly {
            target: self
                .location
                .as_ref()
                .map_or_else(|| "(anonymous region)".to_owned(), |l| l.to_string()),
            op,
        }
    }

    /// Removes the region's name (see [`Location::remove`]).
    pub fn remove(location: &Location) -> Result<()> {
        location.remove()
    }

    fn header(&self) -> &RegionHeader {
        // SAFETY: every constructor checked (or created) a mapping of at least
        // HEADER_SIZE bytes — `ensure_ready` fails first otherwise — the base of a
        // mapping is page aligned, and the header is all atomics, so concurrent access
        // from other processes is race-free. The reference borrows `self`, which owns
        // the mapping.
        unsafe { &*self.seg.as_ptr().cast::<RegionHeader>() }
    }

    fn entry(&self, index: u32) -> &Entry {
        debug_assert!(HEADER_SIZE + (index as usize + 1) * ENTRY_SIZE <= self.seg.len());
        // SAFETY: callers pass `index < capacity` where `capacity` was validated so the
        // whole table lies inside the mapping; entries are 8-aligned at
        // 128 + index × 80 from a page-aligned base and all atomics.
        unsafe {
            &*self
                .seg
                .as_ptr()
                .add(HEADER_SIZE + index as usize * ENTRY_SIZE)
                .cast::<Entry>()
        }
    }

    /// Waits until the region is READY, initializing it (or taking over from a dead
    /// initializer) when needed.
    fn ensure_ready(&self, opts: RegionOptions) -> Result<()> {
        if self.seg.len() < PAGE as usize {
            return Err(Error::TooSmall {
                needed: PAGE as usize,
                available: self.seg.len(),
            });
        }
        let deadline = Deadline::after(opts.wait);
        loop {
            match self.header().object.validate(Kind::Region) {
                Ok(()) => return self.check_header(),
                Err(Error::Uninitialized { .. }) => {}
                Err(e) => return Err(e),
            }
            // A read-only region never writes: it only waits for an initializer.
            let initialize = opts.initialize && !self.read_only;
            if initialize {
                if let Some(claimed) = self.try_claim()? {
                    // Re-check under the claim: another process may have initialized
                    // the region and released the claim between our check above and
                    // our claim; initializing again would wipe its published table
                    // (found by tests/chaos.rs). The claim's Acquire CAS pairs with
                    // that process's Release, so its READY is visible here.
                    match self.header().object.validate(Kind::Region) {
                        Err(Error::Uninitialized { .. }) => {}
                        Ok(()) => {
                            claimed.release();
                            return self.check_header();
                        }
                        // Someone wrote something else meanwhile: never overwrite it.
                        Err(e) => return Err(e),
                    }
                    let result = self.initialize(opts.capacity);
                    claimed.release();
                    return result;
                }
            }
            if deadline.has_passed() {
                if !initialize {
                    return Err(Error::Uninitialized {
                        expected: Kind::Region,
                    });
                }
                return Err(Error::TimedOut(
                    "another process is still initializing the region",
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Writes a fresh header and an empty table. Called under the claim.
    fn initialize(&self, capacity: u32) -> Result<()> {
        check_capacity(capacity, self.seg.len())?;
        let me = process::current_identity()?;
        let h = self.header();
        h.object.begin_init(Kind::Region, 0);
        // Relaxed (all stores below): published by the Release in `publish`; readers
        // use them only after seeing READY with Acquire.
        h.size.store(self.seg.len() as u64, Ordering::Relaxed);
        h.capacity.store(capacity, Ordering::Relaxed);
        h.count.store(0, Ordering::Relaxed);
        let data_start = data_start_for(capacity);
        h.data_start.store(data_start, Ordering::Relaxed);
        h.next_free.store(data_start, Ordering::Relaxed);
        h.creator_pid.store(u64::from(me.pid), Ordering::Relaxed);
        h.creator_start.store(me.start_time, Ordering::Relaxed);
        h.creator_ns.store(me.pid_ns, Ordering::Relaxed);
        failpoint("region-init");
        h.object.publish();
        Ok(())
    }

    /// Checks a READY header's fields against the mapping and our pid namespace.
    fn check_header(&self) -> Result<()> {
        let h = self.header();
        // Relaxed (all loads here): ordered after `validate`'s Acquire load of READY.
        let len = self.seg.len() as u64;
        let size = h.size.load(Ordering::Relaxed);
        if size != len {
            return Err(Error::Corrupt(format!(
                "region header says {size} bytes, the mapping has {len}"
            )));
        }
        let capacity = h.capacity.load(Ordering::Relaxed);
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::Corrupt(format!("table capacity {capacity}")));
        }
        let data_start = h.data_start.load(Ordering::Relaxed);
        if data_start != data_start_for(capacity) || data_start > len {
            return Err(Error::Corrupt(format!("data area offset {data_start}")));
        }
        let ns = h.creator_ns.load(Ordering::Relaxed);
        let current = process::current_pid_namespace().unwrap_or(ns);
        if ns != current {
            return Err(Error::PidNamespaceMismatch {
                recorded: ns,
                current,
            });
        }
        Ok(())
    }

    /// Claims the region's claim word if it is free or its holder is proven dead
    /// ([`Liveness::Dead`]); a holder whose liveness is unknown is waited for.
    fn try_claim(&self) -> Result<Option<Claim<'_>>> {
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

    fn claim_until(&self, deadline: Deadline) -> Result<Claim<'_>> {
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

    /// Reads and validates every published entry.
    pub fn entries(&self) -> Result<Vec<EntryInfo>> {
        let h = self.header();
        // Relaxed: validated at open; re-checked here because a hostile peer could
        // have changed it since.
        let capacity = h.capacity.load(Ordering::Relaxed);
        if capacity == 0
            || capacity > MAX_CAPACITY
            || data_start_for(capacity) > self.seg.len() as u64
        {
            return Err(Error::Corrupt(format!("table capacity {capacity}")));
        }
        // Acquire: pairs with the Release increment in `append`, which published the
        // entries and the objects below this count.
        let count = h.count.load(Ordering::Acquire);
        if count > capacity {
            return Err(Error::Corrupt(format!(
                "{count} entries in a table of {capacity}"
            )));
        }
        let data_start = data_start_for(capacity);
        let len = self.seg.len() as u64;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            out.push(self.read_entry(i, data_start, len)?);
        }
        let mut spans: Vec<(u64, u64, usize)> = out
            .iter()
            .enumerate()
            .map(|(i, e)| (e.offset, e.offset + e.size, i))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(Error::Corrupt(format!(
                    "objects {:?} and {:?} overlap",
                    out[pair[0].2].name, out[pair[1].2].name
                )));
            }
        }
        Ok(out)
    }

    fn read_entry(&self, index: u32, data_start: u64, len: u64) -> Result<EntryInfo> {
        let e = self.entry(index);
        let corrupt = |what: String| Error::Corrupt(format!("table entry {index}: {what}"));
        // Relaxed (all): published by the Release on `count`, which the caller loaded
        // with Acquire.
        let raw_kind = e.kind.load(Ordering::Relaxed);
        let kind = Kind::from_raw(raw_kind).ok_or_else(|| corrupt(format!("kind {raw_kind}")))?;
        let align = e.align.load(Ordering::Relaxed);
        let offset = e.offset.load(Ordering::Relaxed);
        let size = e.size.load(Ordering::Relaxed);
        if !align.is_power_of_two() || align > PAGE as u32 {
            return Err(corrupt(format!("alignment {align}")));
        }
        let end = offset
            .checked_add(size)
            .ok_or_else(|| corrupt("size overflows".into()))?;
        if size == 0 || offset < data_start || end > len || offset % u64::from(align) != 0 {
            return Err(corrupt(format!(
                "span {offset}..{end} outside {data_start}..{len}"
            )));
        }
        let name_len = e.name_len.load(Ordering::Relaxed) as usize;
        if name_len == 0 || name_len > MAX_NAME_LEN {
            return Err(corrupt(format!("name length {name_len}")));
        }
        let mut bytes = [0u8; MAX_NAME_LEN];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&e.name) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let name = core::str::from_utf8(&bytes[..name_len])
            .map_err(|_| corrupt("name is not UTF-8".into()))?
            .to_owned();
        Ok(EntryInfo {
            name,
            kind,
            offset,
            size,
            align,
            type_hash: e.type_hash.load(Ordering::Relaxed),
        })
    }

    /// The object named `name`, of type `T`, if it exists.
    ///
    /// On a [read-only](Self::is_read_only) region this is [`Error::ReadOnly`]: the
    /// objects' methods write to the mapping.
    pub fn get<T: Shared>(&self, name: &str) -> Result<&T> {
        self.check_writable("get")?;
        validate_object_name(name)?;
        let entries = self.entries()?;
        match entries.iter().find(|e| e.name == name) {
            Some(e) => self.attach_entry::<T>(e),
            None => Err(Error::NotFound(format!("object {name:?}"))),
        }
    }

    /// The object named `name`, creating and initializing it with `init` if it does not
    /// exist yet. Races between processes are safe: exactly one initializes it; the
    /// others wait (up to [`DEFAULT_WAIT`]) and then attach; if the initializer dies,
    /// another process takes over. [`Error::ReadOnly`] on a read-only region.
    pub fn get_or_init<T: Shared>(&self, name: &str, init: T::Init) -> Result<&T> {
        self.get_or_init_with(name, init, DEFAULT_WAIT)
    }

    /// [`get_or_init`](Self::get_or_init) with an explicit bound on waiting for another
    /// process's table append.
    pub fn get_or_init_with<T: Shared>(
        &self,
        name: &str,
        init: T::Init,
        wait: Duration,
    ) -> Result<&T> {
        self.check_writable("get_or_init")?;
        validate_object_name(name)?;
        if let Some(e) = self.entries()?.into_iter().find(|e| e.name == name) {
            return self.attach_entry::<T>(&e);
        }
        self.append::<T>(name, init, Deadline::after(wait))
    }

    #[cold]
    fn append<T: Shared>(&self, name: &str, init: T::Init, deadline: Deadline) -> Result<&T> {
        let claim = self.claim_until(deadline)?;
        // Re-read under the claim: another process may have appended it meanwhile.
        let entries = self.entries()?;
        if let Some(e) = entries.iter().find(|e| e.name == name) {
            drop(claim);
            return self.attach_entry::<T>(e);
        }
        let h = self.header();
        // Relaxed: `entries()` validated capacity and count just now, and only the
        // claim holder (us) changes them.
        let capacity = h.capacity.load(Ordering::Relaxed);
        let index = entries.len() as u32;
        if index >= capacity {
            return Err(Error::Full("region table"));
        }
        let (size, align) = (
            core::mem::size_of::<T>() as u64,
            core::mem::align_of::<T>() as u64,
        );
        if size == 0 || align > PAGE {
            return Err(Error::InvalidArgument(
                "zero-sized or over-aligned shared type",
            ));
        }
        let len = self.seg.len() as u64;
        let data_start = data_start_for(capacity);
        // The first free byte is after every published object; a bump pointer left
        // beyond that by a claimant that died mid-append is reset, reclaiming its space.
        let next_free = entries
            .iter()
            .map(|e| e.offset + e.size)
            .max()
            .unwrap_or(data_start)
            .max(data_start);
        let offset = next_free.div_ceil(align) * align;
        let end = offset
            .checked_add(size)
            .filter(|&end| end <= len)
            .ok_or(Error::Full("region space"))?;

        let e = self.entry(index);
        let mut name_words = [0u8; MAX_NAME_LEN];
        name_words[..name.len()].copy_from_slice(name.as_bytes());
        // Relaxed (all entry stores): published by the Release increment of `count`.
        e.kind.store(T::KIND as u32, Ordering::Relaxed);
        e.align.store(align as u32, Ordering::Relaxed);
        e.offset.store(offset, Ordering::Relaxed);
        e.size.store(size, Ordering::Relaxed);
        e.type_hash.store(type_hash::<T>(), Ordering::Relaxed);
        e.name_len.store(name.len() as u32, Ordering::Relaxed);
        for (word, chunk) in e.name.iter().zip(name_words.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        h.next_free.store(end, Ordering::Relaxed);
        // SAFETY: `offset..end` lies inside the mapping (checked), is aligned for T
        // (offset is a multiple of align_of::<T>() from a page-aligned base), is
        // disjoint from the table and every published object (it starts after all of
        // them), and no other process touches it: it is unpublished and we hold the
        // claim. The reference borrows `self`, which owns the mapping.
        let object =
            unsafe { T::init_at(self.seg.as_ptr().add(offset as usize).cast::<T>(), init)? };
        failpoint("object-init");
        // Release: publishes the entry and the initialized object; pairs with the
        // Acquire load of `count` in `entries`.
        h.count.store(index + 1, Ordering::Release);
        drop(claim);
        Ok(object)
    }

    /// The object of a table entry read by [`entries`](Self::entries), as `T` (checked
    /// like [`get`](Self::get), without reading the table again). Not refused on a
    /// read-only region, whose mapping is `PROT_READ`: callers (the tool's read-only
    /// inspection) call only methods that read.
    pub(crate) fn attach_entry<T: Shared>(&self, e: &EntryInfo) -> Result<&T> {
        let expected = core::any::type_name::<T>();
        if e.kind != T::KIND
            || e.type_hash != type_hash::<T>()
            || e.size != core::mem::size_of::<T>() as u64
            || e.align != core::mem::align_of::<T>() as u32
        {
            return Err(Error::TypeMismatch {
                name: e.name.clone(),
                expected,
                found: format!(
                    "{} of {} bytes (type hash {:#x})",
                    e.kind, e.size, e.type_hash
                ),
            });
        }
        // SAFETY: `entries()` validated that `offset..offset+size` lies inside the
        // mapping, past the table, aligned for T (align matches T's, checked above), and
        // overlaps no other object; it was published READY (count, Acquire). The
        // reference borrows `self`, which owns the mapping.
        unsafe { T::attach(self.seg.as_ptr().add(e.offset as usize).cast::<T>()) }
    }

    /// A raw pointer to a table entry's object, for tools that inspect objects by kind
    /// without knowing their Rust type. Validated like [`get`](Self::get) except for the
    /// type.
    pub fn object_ptr(&self, e: &EntryInfo) -> Result<*const u8> {
        let len = self.seg.len() as u64;
        if e.offset.checked_add(e.size).map_or(true, |end| end > len) {
            return Err(Error::Corrupt(format!(
                "object {:?} outside the region",
                e.name
            )));
        }
        // SAFETY: in bounds (checked above).
        Ok(unsafe { self.seg.as_ptr().add(e.offset as usize) })
    }

    /// The process recorded as the region's creator (or last initializer).
    pub fn creator(&self) -> ProcessIdentity {
        let h = self.header();
        // Relaxed: diagnostic fields, published with the header.
        ProcessIdentity {
            pid: h.creator_pid.load(Ordering::Relaxed) as u32,
            _pad: 0,
            start_time: h.creator_start.load(Ordering::Relaxed),
            pid_ns: h.creator_ns.load(Ordering::Relaxed),
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

    /// Table capacity and used data bytes (for `inspect`).
    pub fn usage(&self) -> (u32, u32, u64, u64) {
        let h = self.header();
        // Relaxed: diagnostic readings.
        (
            h.count.load(Ordering::Relaxed),
            h.capacity.load(Ordering::Relaxed),
            h.next_free.load(Ordering::Relaxed),
            self.seg.len() as u64,
        )
    }

    /// Whether the region header is READY (for `inspect`).
    pub fn is_ready(&self) -> bool {
        self.header().object.state() == STATE_READY
    }
}

/// The region's claim, released on drop — also on error paths.
struct Claim<'a> {
    word: &'a AtomicU64,
    /// Our packed identity, which the word holds while we hold the claim.
    me: u64,
}

impl Claim<'_> {
    fn release(self) {}
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

fn check_capacity(capacity: u32, size: usize) -> Result<()> {
    if capacity == 0 || capacity > MAX_CAPACITY {
        return Err(Error::InvalidArgument(
            "region table capacity must be 1..=4096",
        ));
    }
    let needed = data_start_for(capacity) as usize;
    if size < needed {
        return Err(Error::TooSmall {
            needed,
            available: size,
        });
    }
    Ok(())
}

/// Object names: 1..=40 bytes of UTF-8 without control characters.
///
/// A control character (Unicode category Cc: the C0 range with NUL and ESC, DEL, and
/// the C1 range) is refused because names are shown to people — a terminal escape in a
/// name could erase or forge the lines a tool prints.
pub fn validate_object_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 40 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.chars().any(char::is_control) {
        "contains a control character (C0, DEL or C1), which could act as a terminal \
         escape when the name is displayed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Test hook: when `SHMSYNC_TEST_FAILPOINT` names this point, the process stops here
/// forever (the test then SIGKILLs it), to simulate dying at exactly this step. Only
/// reached on the cold creation paths.
#[cold]
fn failpoint(point: &str) {
    if std::env::var_os("SHMSYNC_TEST_FAILPOINT").is_some_and(|v| v == point) {
        let marker = std::env::var_os("SHMSYNC_TEST_FAILPOINT_MARKER");
        if let Some(path) = marker {
            let _ = std::fs::write(Path::new(&path), point);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("/abc").unwrap(),
            Location::Posix("/abc".into())
        );
        assert_eq!(Location::parse("sysv:0x10").unwrap(), Location::SysV(16));
        assert_eq!(Location::parse("sysv:42").unwrap(), Location::SysV(42));
        assert_eq!(
            Location::parse("/tmp/x").unwrap(),
            Location::File("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("./x").unwrap(),
            Location::File("./x".into())
        );
        assert_eq!(
            Location::parse("file:x").unwrap(),
            Location::File("x".into())
        );
        for bad in ["", "abc", "sysv:", "sysv:0", "sysv:zz", "/", "file:"] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn type_hash_distinguishes_types() {
        assert_ne!(type_hash::<u32>(), type_hash::<i32>());
        assert_eq!(type_hash::<u64>(), type_hash::<u64>());
    }
}
