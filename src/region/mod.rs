//! [`Region`]: a segment with a table of named objects and race-free first
//! initialization across processes.
//!
//! # Layout
//!
//! ```text
//! 0      RegionHeader (128 bytes): ObjectHeader(Kind::Region), claim word, size,
//!        capacity, count, next_free, data_start, creator identity
//! 128    capacity × Entry (96 bytes each): kind, align, offset, size, type identity
//!        (hash, name hash, value size, value align), name
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

use std::time::Duration;

use crate::error::{Error, Result};
use crate::failpoint::failpoint;
use crate::futex::Deadline;
use crate::header::{ObjectHeader, STATE_READY};
use crate::kind::Kind;
use crate::process::{self, ProcessIdentity};
use crate::segment::{OpenSpec, OwnerCheck, Segment};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

mod claim;
mod location;
mod table;

pub use location::Location;
use table::Entry;
pub use table::EntryInfo;

/// Bytes of the region header.
const HEADER_SIZE: usize = 128;
/// Bytes of one table entry.
const ENTRY_SIZE: usize = 96;
/// Longest object name, in bytes (UTF-8).
pub(crate) const MAX_NAME_LEN: usize = 40;
/// Table capacity used by [`Region::create`] (fills the first page).
pub(crate) const DEFAULT_CAPACITY: u32 = 41;
/// Largest table capacity accepted from a caller or from a segment.
pub(crate) const MAX_CAPACITY: u32 = 4096;
/// Data starts on a page boundary.
const PAGE: u64 = 4096;
/// How long an opener waits for another process's initialization or table append.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(5);

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

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(RegionHeader, [u8; HEADER_SIZE]);
#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(Entry, [u8; ENTRY_SIZE]);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert!(
    HEADER_SIZE + DEFAULT_CAPACITY as usize * ENTRY_SIZE <= PAGE as usize
);
// Objects are aligned up to a page from the base, so the base must be page-aligned.
#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(PAGE as usize, crate::segment::MAP_ALIGN);

/// A mapped region: a [`Segment`] whose first page holds a header and a table of named
/// objects. References to objects borrow the `Region`, so the segment cannot be unmapped
/// while any is in use (in particular, while a lock in it is held).
///
/// ```
/// use shmsync::{Region, RawRobustMutex, Segment};
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// let lock = region.get_or_init::<RawRobustMutex>("lock", ())?;
/// assert!(lock.try_lock().is_ok());
/// # unsafe { lock.unlock() }?;
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
/// use shmsync::{Location, RegionOptions};
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
    /// The defaults: capacity [`DEFAULT_CAPACITY`](Region::DEFAULT_CAPACITY), wait [`DEFAULT_WAIT`](Region::DEFAULT_WAIT), initializing,
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

    /// Opens an existing region (waiting up to [`DEFAULT_WAIT`](Region::DEFAULT_WAIT) for its initializer; a
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

    /// A region in memory the caller mapped itself — a `memmap2` mapping, its own
    /// `mmap`, memory another library shares — initialized if it is all zero, opened
    /// if it holds a region, exactly like [`from_segment_with`](Self::from_segment_with):
    /// named objects, [`get_or_init`](Self::get_or_init) races between processes, and
    /// [`inspect`](crate::inspect::inspect) / [`recover`](crate::inspect::recover) all
    /// work on it. Dropping the region unmaps nothing. With
    /// [`RegionOptions::read_only`] nothing is written, and the memory need only be
    /// readable.
    ///
    /// ```
    /// use shmsync::RegionOptions;
    /// use shmsync::{Region, RobustMutex};
    ///
    /// // Any MAP_SHARED mapping will do; this one is a file shared through memmap2.
    /// let file = tempfile_in_tmp()?;
    /// file.set_len(1 << 16)?;
    /// // SAFETY: nobody truncates the file while it is mapped.
    /// let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    /// // SAFETY: a page-aligned MAP_SHARED mapping of 64 KiB that outlives `region`
    /// // and that nothing else touches while the region uses it.
    /// let region = unsafe {
    ///     Region::from_raw_parts(map.as_mut_ptr(), map.len(), RegionOptions::new())?
    /// };
    /// let hits = region.get_or_init::<RobustMutex<u64>>("hits", 0)?;
    /// *hits.lock().expect("lock") += 1;
    /// assert_eq!(shmsync::inspect::inspect(&region)?.objects, 1);
    /// drop(region); // unmaps nothing: `map` is still ours
    /// assert_ne!(map[..8], [0; 8]);
    /// # fn tempfile_in_tmp() -> std::io::Result<std::fs::File> {
    /// #     let path = std::env::temp_dir().join(format!("shmsync-doc-raw-{}", std::process::id()));
    /// #     let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    /// #     std::fs::remove_file(&path)?;
    /// #     Ok(f)
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] unless `ptr` is page-aligned (objects are placed at
    /// offsets from the base, aligned up to a page), [`Error::InvalidArgument`] for a
    /// null `ptr` or a `len` above `isize::MAX`, [`Error::TooSmall`] below one page (or
    /// the table `opts` asks for), and every error of
    /// [`from_segment_with`](Self::from_segment_with) — a region written with another
    /// size than `len` is [`Error::Corrupt`]: every process must pass the same length.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr..ptr + len` is not one mapping, readable and (unless `opts.read_only`)
    ///   writable, that stays mapped at this address — not unmapped, remapped,
    ///   `mprotect`ed, or shrunk by truncating the file behind it — until the region and
    ///   every reference borrowed from it (objects, guards, permits) are gone;
    /// - the mapping is private (`MAP_PRIVATE`, `memmap2`'s `map_copy` or `map_anon`,
    ///   heap or stack memory) while other processes are meant to share the region:
    ///   each would then see its own copy;
    /// - anything but shmsync accesses `ptr..ptr + len` while the region is in use (in
    ///   this process or another): the whole range belongs to the region;
    /// - the same memory is used as a region through a second mapping in this process
    ///   while a lock in it is held (see [`RobustMutex`](crate::RobustMutex)'s limits).
    pub unsafe fn from_raw_parts(ptr: *mut u8, len: usize, opts: RegionOptions) -> Result<Region> {
        // SAFETY: forwarded contract (`borrowed` checks the page alignment); read-only
        // memory only when nothing will write.
        let seg = unsafe { Segment::borrowed(ptr, len, opts.read_only) }?;
        Region::from_segment_with(seg, opts)
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
            target: self.location.as_ref().map_or_else(
                || match self.seg.backing() {
                    crate::segment::Backing::Borrowed => "(caller-provided mapping)".to_owned(),
                    _ => "(anonymous region)".to_owned(),
                },
                |l| l.to_string(),
            ),
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

    /// The process recorded as the region's creator (or last initializer).
    pub fn creator(&self) -> ProcessIdentity {
        let h = self.header();
        // Relaxed: diagnostic fields, published with the header.
        ProcessIdentity::new(
            h.creator_pid.load(Ordering::Relaxed) as u32,
            h.creator_start.load(Ordering::Relaxed),
            h.creator_ns.load(Ordering::Relaxed),
        )
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

impl Region {
    /// The longest object name, in bytes.
    pub const MAX_NAME_LEN: usize = MAX_NAME_LEN;
    /// The number of table entries a region gets unless [`RegionOptions::capacity`]
    /// says otherwise.
    pub const DEFAULT_CAPACITY: u32 = DEFAULT_CAPACITY;
    /// The largest table capacity a region may have.
    pub const MAX_CAPACITY: u32 = MAX_CAPACITY;
    /// How long opening a region waits, by default, for its creator to finish
    /// initializing it.
    pub const DEFAULT_WAIT: Duration = DEFAULT_WAIT;
}
