//! [`Segment`]: one owned shared mapping, whatever backs it.
//!
//! | backing | create | open | remove |
//! |---|---|---|---|
//! | anonymous `MAP_SHARED` (fork children only) | [`Segment::anonymous`] | inherited | — |
//! | POSIX `shm_open` | [`Segment::posix_create`] | [`Segment::posix_open`] | [`Segment::posix_unlink`] |
//! | SysV `shmget` | [`Segment::sysv_create`] | [`Segment::sysv_open`] | [`Segment::sysv_remove`] |
//! | `memfd`, sealed against shrinking | [`Segment::memfd_create`] | [`Segment::recv_memfd`] after [`Segment::send_fd`] | — (last close) |
//! | a file | [`Segment::file_create`] | [`Segment::file_open`] | `std::fs::remove_file` |
//!
//! Each constructor's documentation has a runnable example. Dropping a `Segment` unmaps
//! (`munmap`, or `shmdt` for SysV); it never removes a name: removal is always an
//! explicit call, so one process exiting never pulls a segment from under the others.
//!
//! Creating is exclusive (`O_CREAT|O_EXCL`, `IPC_CREAT|IPC_EXCL`: an existing name is
//! `EEXIST`) with mode 0600 unless another mode is asked for, and zero-length segments
//! are refused. Opening maps the whole segment at the size its creator chose; check what
//! you need with [`Segment::require_len`].
//!
//! Opening a POSIX, SysV or file segment accepts only one that nobody but this
//! process's effective uid can use, judged by the kernel on the opened object (`fstat`
//! on the descriptor, `IPC_STAT` on the SysV id), never by a path: another owner is
//! [`Error::ForeignOwner`] (someone may have planted it under the name you expected), a
//! SysV creator (`cuid`) other than us is [`Error::ForeignCreator`] (a creator may hand
//! the owner uid to anyone with `IPC_SET` and keeps read-write access), and a mode
//! granting group or others any permission is [`Error::OpenToOthers`] — unless the
//! `*_open_any_owner` variant is used. A segment created with such a mode (see
//! `*_create_with_mode`) is therefore opened with the any-owner variants by everyone,
//! its creator's user included: sharing with other users is each opener's explicit
//! decision.
//!
//! POSIX and file segments are opened with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
//! O_CLOEXEC` and refused with [`Error::NotRegularFile`] unless `fstat` on the opened
//! descriptor says regular file: a symbolic link, FIFO or device planted at the name is
//! never followed, waited on, read, written, truncated or mapped.
//! Opening a POSIX or file segment that its creator is still sizing (size 0 between
//! `open` and `ftruncate`) waits up to [`SIZING_WAIT`] for it.
//!
//! The mapping sits at a different address in every process: store offsets, never
//! pointers, in it.
//!
//! An anonymous segment shared with a `fork` child (the child here only does
//! async-signal-safe work):
//!
//! ```
//! use shmsync::Segment;
//! let seg = Segment::anonymous(4096)?;
//! let p = seg.as_ptr();
//! // SAFETY: this doctest is single-threaded, so the child may do anything.
//! match unsafe { libc::fork() } {
//!     // SAFETY: the mapping is 4096 bytes long; `_exit` skips the parent's destructors.
//!     0 => unsafe {
//!         p.write(b'!');
//!         libc::_exit(0)
//!     },
//!     pid => {
//!         assert!(pid > 0);
//!         let mut status = 0;
//!         // SAFETY: waiting for our own child.
//!         assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
//!         // SAFETY: the mapping is 4096 bytes long; the child has exited.
//!         assert_eq!(unsafe { p.read() }, b'!');
//!     }
//! }
//! # Ok::<(), shmsync::Error>(())
//! ```

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::futex::Deadline;

mod file;
mod memfd;
mod posix;
mod sysv;
pub(crate) use posix::validate_posix_name;
pub use sysv::ftok;

/// The warning every any-owner API carries in its documentation.
macro_rules! any_owner_warning {
    () => {
        "\n\n**Trust.** A segment another user owns, or that group or others may write, is \
         shared with processes you may not control. A live peer with write access can do \
         more than corrupt data: it can rewrite glibc's robust-list links inside a mutex \
         that another process holds, and that holder's unlock then writes through the \
         peer's pointers into its own memory (or crashes). This is inherent to the \
         kernel's robust futex lists, which keep those links inside the shared mutex; no \
         check on attach can prevent it. Share segments writable only with processes you \
         trust not to be malicious; to look at one you do not trust, open it read-only \
         ([`RegionOptions::read_only`](crate::region::RegionOptions::read_only)), which \
         never locks or writes anything."
    };
}
pub(crate) use any_owner_warning;

/// How long an opener waits for a segment's creator to give it a size.
pub(crate) const SIZING_WAIT: Duration = Duration::from_secs(2);

/// The alignment of every segment's base: a page (the smallest on Linux).
pub(crate) const MAP_ALIGN: usize = 4096;

/// Default permission bits for created segments: owner read/write only.
pub(crate) const DEFAULT_MODE: libc::mode_t = 0o600;

impl Segment {
    /// Default permission bits for created segments: owner read/write only (`0o600`).
    pub const DEFAULT_MODE: libc::mode_t = DEFAULT_MODE;
}

/// What a [`Segment`] is mapped from.
///
/// ```
/// use shmsync::{Backing, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// assert!(matches!(seg.backing(), Backing::Anonymous));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Backing {
    /// `MAP_SHARED | MAP_ANONYMOUS`: shared with `fork` children only.
    Anonymous,
    /// A POSIX shared-memory object (`/dev/shm/<name>`).
    Posix {
        /// The name, with its leading `/`.
        name: String,
    },
    /// A SysV shared-memory segment.
    SysV {
        /// The key it was created or opened with.
        key: libc::key_t,
        /// The segment id.
        id: libc::c_int,
    },
    /// A `memfd_create` file; the descriptor is kept so it can be sent to others.
    Memfd {
        /// The memfd.
        fd: OwnedFd,
    },
    /// A regular file.
    File {
        /// Its path.
        path: std::path::PathBuf,
    },
    /// Memory the caller mapped itself and lends to this value
    /// ([`Segment::from_raw_parts`]): dropping the segment leaves it mapped.
    Borrowed,
}

/// An owned shared mapping. `Send + Sync`: the mapping is plain memory that every
/// object placed in it synchronizes on its own.
///
/// ```
/// use shmsync::Segment;
///
/// let seg = Segment::anonymous(4096)?; // inherited by fork children
/// assert_eq!(seg.len(), 4096);
/// assert_eq!(seg.as_ptr() as usize % 4096, 0); // page-aligned
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
    read_only: bool,
}

// SAFETY: the segment owns a mapping, not thread-bound state; the bytes in it are only
// reached through raw pointers and the shared objects' own synchronization.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out the base pointer and length.
unsafe impl Sync for Segment {}

impl Segment {
    /// An anonymous shared mapping of `len` bytes (zero-filled), shared with children
    /// forked after this call.
    pub fn anonymous(len: usize) -> Result<Segment> {
        check_len(len)?;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Segment::from_mmap(
            ptr,
            len,
            Backing::Anonymous,
            false,
            "mmap(MAP_ANONYMOUS)",
            "",
        )
    }

    /// Maps `len` bytes of `fd` shared, read-write.
    pub(crate) fn map_fd(fd: RawFd, len: usize, backing: Backing, target: &str) -> Result<Segment> {
        Segment::map_fd_with(fd, len, backing, target, false)
    }

    /// Maps `len` bytes of `fd` shared, read-only (`PROT_READ`) when `read_only`, else
    /// read-write.
    pub(crate) fn map_fd_with(
        fd: RawFd,
        len: usize,
        backing: Backing,
        target: &str,
        read_only: bool,
    ) -> Result<Segment> {
        check_len(len)?;
        let prot = if read_only {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // SAFETY: mapping a file descriptor creates a new mapping and touches no existing
        // memory; `fd` is open (the caller holds it).
        let ptr = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        Segment::from_mmap(ptr, len, backing, read_only, "mmap", target)
    }

    fn from_mmap(
        ptr: *mut libc::c_void,
        len: usize,
        backing: Backing,
        read_only: bool,
        op: &'static str,
        target: &str,
    ) -> Result<Segment> {
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os(op, target));
        }
        Ok(Segment {
            // mmap never returns null on success for a non-MAP_FIXED request.
            ptr: NonNull::new(ptr.cast())
                .ok_or_else(|| Error::Corrupt("mmap returned null".into()))?,
            len,
            backing,
            read_only,
        })
    }

    /// Lends memory the caller mapped itself (with `mmap`, `memmap2`, …) as a
    /// read-write segment, so that a [`Region`](crate::Region) and the
    /// [`inspect`](crate::inspect) functions work on it. Dropping the segment unmaps
    /// nothing ([`Backing::Borrowed`]); unmapping stays the caller's business.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] unless `ptr` is page-aligned (4096), as every mapping's
    /// base is and as a [`Region`](crate::Region) needs; [`Error::InvalidArgument`] for
    /// a null `ptr` or a `len` of 0 or above `isize::MAX`.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr..ptr + len` is not one mapping, readable and writable, that stays mapped
    ///   (not unmapped, remapped, `mprotect`ed read-only, or shrunk by truncating the
    ///   file behind it) for as long as the returned segment or anything borrowed from
    ///   it (a region, an object, a guard) is in use;
    /// - the mapping is private (`MAP_PRIVATE`, a copy-on-write file mapping such as
    ///   `memmap2`'s `map_copy`, or ordinary heap or stack memory) while other processes
    ///   are meant to share it: each process would then lock its own copy;
    /// - the bytes are accessed other than through shmsync's objects while they are in
    ///   use (for a region: anything but the region, from the header to its end).
    pub unsafe fn from_raw_parts(ptr: *mut u8, len: usize) -> Result<Segment> {
        // SAFETY: forwarded contract.
        unsafe { Segment::borrowed(ptr, len, false) }
    }

    /// [`from_raw_parts`](Self::from_raw_parts), read-only when `read_only` (then the
    /// memory need only be readable, and nothing is written through the segment).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the contract of [`from_raw_parts`](Self::from_raw_parts) does not hold, except
    ///   that read-only memory is allowed when `read_only`.
    pub(crate) unsafe fn borrowed(ptr: *mut u8, len: usize, read_only: bool) -> Result<Segment> {
        if (ptr as usize) % MAP_ALIGN != 0 {
            return Err(Error::Misaligned {
                addr: ptr as usize,
                align: MAP_ALIGN,
            });
        }
        check_len(len)?;
        let ptr = NonNull::new(ptr).ok_or(Error::InvalidArgument(
            "a borrowed mapping cannot be at address 0",
        ))?;
        Ok(Segment {
            ptr,
            len,
            backing: Backing::Borrowed,
            read_only,
        })
    }

    /// The mapping's base address in this process (it differs between processes).
    ///
    /// On a [read-only](Self::is_read_only) segment the pages are mapped `PROT_READ`:
    /// writing through this pointer faults (SIGSEGV).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Whether the segment was opened and mapped read-only (`O_RDONLY` or `SHM_RDONLY`,
    /// `PROT_READ`), as [`Region::open_with`](crate::Region::open_with) does for
    /// [`RegionOptions::read_only`](crate::region::RegionOptions::read_only).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: zero-length segments are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the segment is mapped from.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Fails with [`Error::TooSmall`] unless the segment is at least `min` bytes long.
    ///
    /// An opener learns the size its creator chose; call this before placing or attaching
    /// anything that needs `min` bytes.
    ///
    /// ```
    /// use shmsync::{Error, Segment};
    /// let seg = Segment::anonymous(4096)?;
    /// seg.require_len(4096)?;
    /// assert!(matches!(seg.require_len(4097), Err(Error::TooSmall { needed: 4097, available: 4096 })));
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn require_len(&self, min: usize) -> Result<()> {
        if self.len < min {
            return Err(Error::TooSmall {
                needed: min,
                available: self.len,
            });
        }
        Ok(())
    }

    /// The memfd behind a [`Backing::Memfd`] segment (to pass it on some other way than
    /// [`send_fd`](Self::send_fd)); `None` for other backings.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Memfd { fd } => Some(fd.as_fd()),
            _ => None,
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Errors are ignored: nothing useful can be done about a failed unmap in Drop, and
        // neither call can fail for a mapping this value owns.
        match self.backing {
            // Not ours to unmap: the lender unmaps it after this value is gone.
            Backing::Borrowed => {}
            // SAFETY: `ptr` is the address `shmat` returned for this value, attached once;
            // every reference into it borrows `self` (objects, guards), so none outlives
            // this call.
            Backing::SysV { .. } => unsafe {
                libc::shmdt(self.ptr.as_ptr().cast());
            },
            // SAFETY: `ptr`/`len` describe a mapping this value owns; every reference into
            // it borrows `self` (objects, guards), so none outlives this call.
            _ => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            },
        }
    }
}

pub(crate) fn check_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::InvalidArgument("a segment cannot be 0 bytes long"));
    }
    if len > isize::MAX as usize {
        return Err(Error::InvalidArgument("segment length exceeds isize::MAX"));
    }
    Ok(())
}

/// `fstat` of an open file descriptor.
pub(crate) fn fd_stat(fd: RawFd, target: &str) -> Result<libc::stat> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for a stat buffer; `fd` is open.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(Error::last_os("fstat", target));
    }
    // SAFETY: fstat succeeded, so it initialized `st`.
    Ok(unsafe { st.assume_init() })
}

/// Size of an open file descriptor (`fstat`).
pub(crate) fn fd_size(fd: RawFd, target: &str) -> Result<u64> {
    Ok(fd_stat(fd, target)?.st_size as u64)
}

/// How an existing POSIX, SysV or file segment is opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenSpec {
    /// Whose segments are accepted.
    pub(crate) owner: OwnerCheck,
    /// Open and map read-only.
    pub(crate) read_only: bool,
    /// Size a segment its creator never sized to this many bytes (see
    /// [`wait_for_size`]); only for read-write `open_or_create`-style callers.
    pub(crate) size_if_unsized: Option<usize>,
}

impl OpenSpec {
    /// Read-write, checking the owner as `owner` says, never sizing.
    pub(crate) fn new(owner: OwnerCheck) -> OpenSpec {
        OpenSpec {
            owner,
            read_only: false,
            size_if_unsized: None,
        }
    }

    /// The `open(2)` access mode.
    pub(crate) fn access_flags(self) -> libc::c_int {
        if self.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        }
    }
}

/// Flags every POSIX and file segment open adds to its access mode: never follow a
/// symbolic link planted at the name, never block on a FIFO, never take a terminal as
/// the controlling one, never leak the descriptor into an exec'd program.
pub(crate) const OPEN_FLAGS: libc::c_int =
    libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// What a file of mode `st_mode` is, for an error, if it is not a regular file.
pub(crate) fn non_regular_kind(st_mode: u32) -> Option<&'static str> {
    Some(match st_mode & libc::S_IFMT {
        libc::S_IFREG => return None,
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFDIR => "a directory",
        libc::S_IFSOCK => "a socket",
        _ => "of an unknown file type",
    })
}

/// `fstat`s the descriptor just opened for `target` and refuses anything but a regular
/// file, before the caller reads, writes, truncates or maps it.
pub(crate) fn regular_file_stat(fd: RawFd, target: &str) -> Result<libc::stat> {
    let st = fd_stat(fd, target)?;
    match non_regular_kind(st.st_mode) {
        None => Ok(st),
        Some(found) => Err(Error::NotRegularFile {
            target: target.to_owned(),
            found,
        }),
    }
}

/// An open that failed with `ELOOP` under `O_NOFOLLOW`: the last component of `target`
/// is a symbolic link.
#[cold]
pub(crate) fn symlink_refused(target: &str) -> Error {
    Error::NotRegularFile {
        target: target.to_owned(),
        found: "a symbolic link",
    }
}

/// Who may use an opened segment, as the kernel reports it for the open object (`fstat`
/// on the descriptor, `IPC_STAT` on the SysV id), never for a path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ownership {
    /// The owner's uid.
    pub(crate) uid: u32,
    /// The creator's uid, where the kernel keeps one apart from the owner (SysV `cuid`:
    /// the creator keeps owner rights whatever `uid` is set to).
    pub(crate) creator_uid: Option<u32>,
    /// The permission bits.
    pub(crate) mode: u32,
}

impl Ownership {
    /// Owner and mode of an `fstat`ed file.
    pub(crate) fn of_file(st: &libc::stat) -> Ownership {
        Ownership {
            uid: st.st_uid,
            creator_uid: None,
            mode: st.st_mode & 0o7777,
        }
    }
}

/// Whether an opener checks who owns the segment it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnerCheck {
    /// Accept only a segment that nobody but this process's effective uid can use: owned
    /// (and, for SysV, created) by it, with no group or other permission bit.
    MustBeOurs,
    /// Accept any owner and mode (the caller asked for it explicitly).
    Any,
}

impl OwnerCheck {
    /// Refuses, unless any owner was asked for: an owner other than our effective uid
    /// ([`Error::ForeignOwner`]), a creator other than it ([`Error::ForeignCreator`]),
    /// and a mode granting group or others any access ([`Error::OpenToOthers`]).
    pub(crate) fn check(self, who: Ownership, target: &str) -> Result<()> {
        if self == OwnerCheck::Any {
            return Ok(());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let target = target.to_owned();
        if who.uid != euid {
            return Err(Error::ForeignOwner {
                target,
                owner_uid: who.uid,
            });
        }
        if let Some(creator_uid) = who.creator_uid.filter(|&c| c != euid) {
            return Err(Error::ForeignCreator {
                target,
                creator_uid,
            });
        }
        if who.mode & 0o077 != 0 {
            return Err(Error::OpenToOthers {
                target,
                mode: who.mode & 0o777,
            });
        }
        Ok(())
    }
}

/// Waits (bounded by [`SIZING_WAIT`]) until `fd` has a non-zero size: its creator may be
/// between `open` and `ftruncate`. If it is still unsized then and `size_if_unsized` is
/// given, the creator is taken to have died there and the object is sized to that many
/// bytes here (only an opener that knows the intended size — `open_or_create` — passes
/// one); otherwise the wait ends with [`Error::TimedOut`].
pub(crate) fn wait_for_size(
    fd: RawFd,
    target: &str,
    size_if_unsized: Option<usize>,
) -> Result<usize> {
    let deadline = Deadline::after(SIZING_WAIT);
    loop {
        let size = fd_size(fd, target)?;
        if size > 0 {
            return usize::try_from(size)
                .map_err(|_| Error::InvalidArgument("segment larger than the address space"));
        }
        if deadline.has_passed() {
            let Some(len) = size_if_unsized else {
                return Err(Error::TimedOut(
                    "the segment still has size 0 (its creator never sized it)",
                ));
            };
            check_len(len)?;
            // SAFETY: `fd` is an open descriptor the caller holds. Several openers may
            // race here; they all set the same size.
            if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
                return Err(Error::last_os(
                    "ftruncate (sizing an abandoned segment)",
                    target,
                ));
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Wraps a raw descriptor returned by a successful `open`-like call.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass a descriptor just returned by a successful open-like call,
    // which nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `name` as a C string, refusing interior NULs.
pub(crate) fn c_string(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::InvalidName {
        name: name.to_owned(),
        reason: "contains a NUL byte",
    })
}

/// `ftruncate` with context.
pub(crate) fn set_len(fd: &OwnedFd, len: usize, target: &str) -> Result<()> {
    check_len(len)?;
    // SAFETY: `fd` is an open descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(Error::last_os("ftruncate", target));
    }
    Ok(())
}
