//! [`Segment`]: one owned `MAP_SHARED` mapping, whatever backs it.
//!
//! Backings: an anonymous shared mapping (inherited across `fork`), POSIX shared memory
//! (`shm_open`), SysV shared memory (`shmget`), a `memfd` (sealed against shrinking,
//! passed between processes over a Unix socket), or a file. Dropping a `Segment` unmaps
//! it; it never removes a name: removal is always an explicit call
//! ([`Segment::posix_unlink`], [`Segment::sysv_remove`], `std::fs::remove_file`), so one
//! process exiting never pulls a segment from under the others.
//!
//! Creating is exclusive (`O_CREAT|O_EXCL`, `IPC_CREAT|IPC_EXCL`) with mode 0600 unless
//! another mode is asked for. Opening a POSIX or file segment that its creator is still
//! sizing (size 0 between `open` and `ftruncate`) waits up to [`SIZING_WAIT`] for it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::futex::Deadline;

mod posix;
pub use posix::validate_posix_name;

/// How long an opener waits for a segment's creator to give it a size.
pub const SIZING_WAIT: Duration = Duration::from_secs(2);

/// Default permission bits for created segments: owner read/write only.
pub const DEFAULT_MODE: libc::mode_t = 0o600;

/// What a [`Segment`] is mapped from.
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
}

/// An owned shared mapping. `Send + Sync`: the mapping is plain memory that every
/// object placed in it synchronizes on its own.
#[derive(Debug)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
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
        Segment::from_mmap(ptr, len, Backing::Anonymous, "mmap(MAP_ANONYMOUS)", "")
    }

    /// Maps `len` bytes of `fd` shared, read-write.
    pub(crate) fn map_fd(fd: RawFd, len: usize, backing: Backing, target: &str) -> Result<Segment> {
        check_len(len)?;
        // SAFETY: mapping a file descriptor creates a new mapping and touches no existing
        // memory; `fd` is open (the caller holds it).
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        Segment::from_mmap(ptr, len, backing, "mmap", target)
    }

    fn from_mmap(
        ptr: *mut libc::c_void,
        len: usize,
        backing: Backing,
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
        })
    }

    /// The mapping's base address in this process (it differs between processes).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
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
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value owns; every reference into it
        // borrows `self` (objects, guards), so none outlives this call.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn check_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::InvalidArgument("a segment cannot be 0 bytes long"));
    }
    if len > isize::MAX as usize {
        return Err(Error::InvalidArgument("segment length exceeds isize::MAX"));
    }
    Ok(())
}

/// Size of an open file descriptor (`fstat`).
pub(crate) fn fd_size(fd: RawFd, target: &str) -> Result<u64> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for a stat buffer; `fd` is open.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(Error::last_os("fstat", target));
    }
    // SAFETY: fstat succeeded, so it initialized `st`.
    Ok(unsafe { st.assume_init() }.st_size as u64)
}

/// Waits (bounded by [`SIZING_WAIT`]) until `fd` has a non-zero size: its creator may be
/// between `open` and `ftruncate`.
pub(crate) fn wait_for_size(fd: RawFd, target: &str) -> Result<usize> {
    let deadline = Deadline::after(SIZING_WAIT);
    loop {
        let size = fd_size(fd, target)?;
        if size > 0 {
            return usize::try_from(size)
                .map_err(|_| Error::InvalidArgument("segment larger than the address space"));
        }
        if deadline.has_passed() {
            return Err(Error::TimedOut(
                "the segment still has size 0 (its creator never sized it)",
            ));
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
