//! SysV shared memory: `shmget` + `shmat`, removed with `shmctl(IPC_RMID)`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{check_len, Backing, OpenSpec, OwnerCheck, Ownership, Segment, DEFAULT_MODE};
use crate::error::{Error, Result};

/// `ftok(3)`: a SysV key derived from an existing file's inode and device and the low 8
/// bits of `proj_id`.
///
/// `proj_id` must not be 0 (ftok's contract). Two files can map to the same key (the
/// inode and device are folded into 24 bits): creating with `IPC_EXCL`, as
/// [`Segment::sysv_create`] does, turns such a collision into `EEXIST` rather than a
/// silent share.
///
/// ```
/// let key = shmsync::ftok(std::env::temp_dir(), b'S')?;
/// assert_eq!(key, shmsync::ftok(std::env::temp_dir(), b'S')?);
/// assert!(shmsync::ftok("/no/such/path", b'S').is_err());
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn ftok(path: impl AsRef<Path>, proj_id: u8) -> Result<libc::key_t> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    if proj_id == 0 {
        return Err(Error::InvalidArgument("ftok's proj_id must not be 0"));
    }
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName {
        name: shown.clone(),
        reason: "contains a NUL byte",
    })?;
    // SAFETY: `cpath` is a valid NUL-terminated string.
    let key = unsafe { libc::ftok(cpath.as_ptr(), libc::c_int::from(proj_id)) };
    if key == -1 {
        return Err(Error::last_os("ftok", shown));
    }
    Ok(key)
}

fn key_name(key: libc::key_t) -> String {
    format!("SysV key {key:#x}")
}

fn refuse_private(key: libc::key_t) -> Result<()> {
    if key == libc::IPC_PRIVATE {
        return Err(Error::InvalidArgument(
            "IPC_PRIVATE is not a key another process can open (use Segment::anonymous)",
        ));
    }
    Ok(())
}

/// `shmctl(IPC_STAT)`.
fn stat(id: libc::c_int, target: &str) -> Result<libc::shmid_ds> {
    let mut ds = core::mem::MaybeUninit::<libc::shmid_ds>::uninit();
    // SAFETY: `ds` is writable storage for a shmid_ds, which IPC_STAT fills.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) } != 0 {
        return Err(Error::last_os("shmctl(IPC_STAT)", target));
    }
    // SAFETY: IPC_STAT succeeded, so it initialized `ds`.
    Ok(unsafe { ds.assume_init() })
}

/// `shmctl(IPC_RMID)` by id.
fn remove_id(id: libc::c_int, target: &str) -> Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, core::ptr::null_mut()) } != 0 {
        return Err(Error::last_os("shmctl(IPC_RMID)", target));
    }
    Ok(())
}

impl Segment {
    /// Creates the SysV segment `key` (`IPC_CREAT|IPC_EXCL`, mode 0600) of `len` bytes,
    /// zero-filled, and attaches it. Fails with `EEXIST` if the key is taken.
    ///
    /// Keys are one flat, system-wide 32-bit namespace: derive one with [`ftok`] or pick
    /// one your processes agree on. [`libc::IPC_PRIVATE`] is refused: no other process
    /// could open it by key and nothing could remove it by key (use
    /// [`Segment::anonymous`] for a segment shared only with `fork` children). The
    /// segment outlives every process until [`Segment::sysv_remove`].
    ///
    /// ```
    /// use shmsync::Segment;
    /// let key = 0x5B00_0000 | (std::process::id() as i32 & 0xff_ffff);
    /// let a = Segment::sysv_create(key, 4096)?;
    /// let b = Segment::sysv_open(key)?;
    /// Segment::sysv_remove(key)?; // attached segments live until detached
    /// assert_eq!(b.len(), 4096);
    /// // SAFETY: both attachments are 4096 bytes long and nothing else uses them.
    /// unsafe {
    ///     a.as_ptr().write(42);
    ///     assert_eq!(b.as_ptr().read(), 42);
    /// }
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn sysv_create(key: libc::key_t, len: usize) -> Result<Segment> {
        Segment::sysv_create_with_mode(key, len, DEFAULT_MODE)
    }

    /// As [`sysv_create`](Self::sysv_create) with explicit permission bits (the low 9
    /// bits of `mode`; SysV ignores the umask).
    pub fn sysv_create_with_mode(
        key: libc::key_t,
        len: usize,
        mode: libc::mode_t,
    ) -> Result<Segment> {
        refuse_private(key)?;
        check_len(len)?;
        let target = key_name(key);
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int;
        // SAFETY: shmget only reads its scalar arguments.
        let id = unsafe { libc::shmget(key, len, flags) };
        if id < 0 {
            return Err(Error::last_os("shmget(IPC_CREAT|IPC_EXCL)", target));
        }
        let attached = Segment::attach_id(key, id, len, &target, false);
        if attached.is_err() {
            // We created it; do not leave a segment nobody attached behind. The first
            // error is the one worth reporting.
            let _ = remove_id(id, &target);
        }
        attached
    }

    /// Attaches the existing SysV segment `key`, whole (its size is read back with
    /// `shmctl(IPC_STAT)`).
    ///
    /// Refuses [`libc::IPC_PRIVATE`], and, as `shmctl(IPC_STAT)` reports them: a segment
    /// owned by another user ([`Error::ForeignOwner`]); one created by another user even
    /// if its owner uid is ours ([`Error::ForeignCreator`]: the creator may have handed
    /// us the owner uid with `IPC_SET`, and keeps read-write access); one whose mode
    /// grants group or others any permission ([`Error::OpenToOthers`]). Use
    /// [`sysv_open_any_owner`](Self::sysv_open_any_owner) when that is intended. A
    /// missing key is [`Error::Os`] with `ENOENT`.
    pub fn sysv_open(key: libc::key_t) -> Result<Segment> {
        Segment::sysv_open_checked(key, OpenSpec::new(OwnerCheck::MustBeOurs))
    }

    /// As [`sysv_open`](Self::sysv_open), accepting a segment of any owner, creator
    /// and mode (our access is what its mode grants).
    #[doc = super::any_owner_warning!()]
    pub fn sysv_open_any_owner(key: libc::key_t) -> Result<Segment> {
        Segment::sysv_open_checked(key, OpenSpec::new(OwnerCheck::Any))
    }

    /// Opens and attaches the SysV segment `key` as `spec` says (read-only attaches with
    /// `SHM_RDONLY`; SysV segments are sized at creation, so `size_if_unsized` is moot).
    pub(crate) fn sysv_open_checked(key: libc::key_t, spec: OpenSpec) -> Result<Segment> {
        refuse_private(key)?;
        let target = key_name(key);
        // SAFETY: shmget only reads its scalar arguments; size 0 opens at any size.
        let id = unsafe { libc::shmget(key, 0, 0) };
        if id < 0 {
            return Err(Error::last_os("shmget", target));
        }
        let ds = stat(id, &target)?;
        let who = Ownership {
            uid: ds.shm_perm.uid,
            creator_uid: Some(ds.shm_perm.cuid),
            mode: u32::from(ds.shm_perm.mode),
        };
        spec.owner.check(who, &target)?;
        Segment::attach_id(key, id, ds.shm_segsz, &target, spec.read_only)
    }

    fn attach_id(
        key: libc::key_t,
        id: libc::c_int,
        len: usize,
        target: &str,
        read_only: bool,
    ) -> Result<Segment> {
        check_len(len)?;
        let flags = if read_only { libc::SHM_RDONLY } else { 0 };
        // SAFETY: shmat with a null address lets the kernel pick a free range; it maps a
        // new attachment and touches no existing memory.
        let ptr = unsafe { libc::shmat(id, core::ptr::null(), flags) };
        // shmat reports failure as (void*)-1, the same value as MAP_FAILED; a successful
        // attachment is detached with shmdt by Drop (Backing::SysV).
        let op = if read_only {
            "shmat(SHM_RDONLY)"
        } else {
            "shmat"
        };
        Segment::from_mmap(ptr, len, Backing::SysV { key, id }, read_only, op, target)
    }

    /// Marks the SysV segment `key` for removal (`IPC_RMID`): the key is free at once;
    /// the memory lives until the last process detaches.
    pub fn sysv_remove(key: libc::key_t) -> Result<()> {
        refuse_private(key)?;
        let target = key_name(key);
        // SAFETY: shmget only reads its scalar arguments.
        let id = unsafe { libc::shmget(key, 0, 0) };
        if id < 0 {
            return Err(Error::last_os("shmget", target));
        }
        remove_id(id, &target)
    }
}
