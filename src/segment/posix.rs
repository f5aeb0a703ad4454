//! POSIX shared memory: `shm_open` + `ftruncate` + `mmap`.

use std::os::fd::AsRawFd;

use super::{
    c_string, check_len, owned, regular_file_stat, set_len, symlink_refused, wait_for_size,
    Backing, OpenSpec, OwnerCheck, Ownership, Segment, DEFAULT_MODE, OPEN_FLAGS,
};
use crate::error::{Error, Result};

/// Longest name accepted (NAME_MAX minus the leading `/`).
const MAX_NAME: usize = 255;

/// Checks a POSIX shared-memory name: a leading `/`, no other `/`, 1..=255 characters
/// after it, no NUL, not `.` or `..`.
pub(crate) fn validate_posix_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(rest) = name.strip_prefix('/') else {
        return bad("a POSIX shared-memory name must start with '/'");
    };
    if rest.is_empty() {
        return bad("the name after '/' is empty");
    }
    if rest.len() > MAX_NAME {
        return bad("longer than 255 bytes after the '/'");
    }
    if rest.contains('/') {
        return bad("only the leading '/' is allowed");
    }
    if rest.contains('\0') {
        return bad("contains a NUL byte");
    }
    if rest == "." || rest == ".." {
        return bad("'.' and '..' are not names");
    }
    Ok(())
}

impl Segment {
    /// Creates the POSIX shared-memory object `name` (`O_CREAT|O_EXCL`, mode 0600) of
    /// `len` bytes, zero-filled, and maps it. Fails with `EEXIST` if it exists.
    ///
    /// Another process opens it with [`posix_open`](Self::posix_open); here the same
    /// process maps it twice, at two addresses, to show that the bytes are shared:
    ///
    /// ```
    /// use shmsync::Segment;
    /// let name = format!("/shmsync-doc-posix-{}", std::process::id());
    /// let a = Segment::posix_create(&name, 4096)?;
    /// let b = Segment::posix_open(&name)?;
    /// Segment::posix_unlink(&name)?; // the mappings stay valid
    /// assert_ne!(a.as_ptr(), b.as_ptr());
    /// // SAFETY: both mappings are 4096 bytes long and nothing else uses them.
    /// unsafe {
    ///     a.as_ptr().copy_from(b"hello".as_ptr(), 5);
    ///     assert_eq!(std::slice::from_raw_parts(b.as_ptr(), 5), b"hello");
    /// }
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn posix_create(name: &str, len: usize) -> Result<Segment> {
        Segment::posix_create_with_mode(name, len, DEFAULT_MODE)
    }

    /// As [`posix_create`](Self::posix_create) with explicit permission bits (subject to
    /// the umask).
    pub fn posix_create_with_mode(name: &str, len: usize, mode: libc::mode_t) -> Result<Segment> {
        validate_posix_name(name)?;
        check_len(len)?;
        let cname = c_string(name)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | OPEN_FLAGS,
                mode,
            )
        };
        if fd < 0 {
            return Err(Error::last_os("shm_open(O_CREAT|O_EXCL)", name));
        }
        let fd = owned(fd);
        let sized = regular_file_stat(fd.as_raw_fd(), name)
            .and_then(|_| set_len(&fd, len, name))
            .and_then(|()| Segment::map_fd(fd.as_raw_fd(), len, posix_backing(name), name));
        if sized.is_err() {
            // We created it; do not leave a half-made object behind.
            // SAFETY: `cname` is a valid NUL-terminated string.
            unsafe { libc::shm_unlink(cname.as_ptr()) };
        }
        sized
    }

    /// Opens and maps the existing POSIX shared-memory object `name`, whole. Waits up to
    /// `SIZING_WAIT` (2 s) if its creator has not sized it yet.
    ///
    /// Refuses an object owned by another user ([`Error::ForeignOwner`]: someone else
    /// may have planted it under the expected name) or whose mode lets group or others
    /// access it ([`Error::OpenToOthers`]), both judged by `fstat` on the opened
    /// descriptor; use [`posix_open_any_owner`](Self::posix_open_any_owner) when that is
    /// intended. Anything but a regular file (a symbolic link or FIFO planted in
    /// `/dev/shm`) is [`Error::NotRegularFile`]. A missing name is [`Error::Os`] with `ENOENT`. Check the size you need with
    /// [`require_len`](Self::require_len).
    pub fn posix_open(name: &str) -> Result<Segment> {
        Segment::posix_open_checked(name, OpenSpec::new(OwnerCheck::MustBeOurs))
    }

    /// As [`posix_open`](Self::posix_open), accepting an object of any owner and mode
    /// (it must still be a regular file, and our access is what its mode grants).
    #[doc = super::any_owner_warning!()]
    pub fn posix_open_any_owner(name: &str) -> Result<Segment> {
        Segment::posix_open_checked(name, OpenSpec::new(OwnerCheck::Any))
    }

    /// As [`posix_open`](Self::posix_open), but an object whose creator never sized it
    /// (it died between the exclusive create and `ftruncate`) is sized to `len` after
    /// the usual wait instead of failing: for `open_or_create`-style callers that know
    /// the intended size.
    pub fn posix_open_or_size(name: &str, len: usize) -> Result<Segment> {
        Segment::posix_open_checked(
            name,
            OpenSpec {
                size_if_unsized: Some(len),
                ..OpenSpec::new(OwnerCheck::MustBeOurs)
            },
        )
    }

    /// Opens and maps the POSIX object `name` as `spec` says.
    pub(crate) fn posix_open_checked(name: &str, spec: OpenSpec) -> Result<Segment> {
        validate_posix_name(name)?;
        let cname = c_string(name)?;
        // glibc's shm_open adds O_NOFOLLOW and O_CLOEXEC itself; OPEN_FLAGS says so too,
        // and adds O_NONBLOCK (a FIFO planted in /dev/shm must not block us) and
        // O_NOCTTY.
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), spec.access_flags() | OPEN_FLAGS, 0) };
        if fd < 0 {
            let err = Error::last_os("shm_open", name);
            // The name has no '/', so under O_NOFOLLOW only the object itself can loop.
            if err.raw_os_error() == Some(libc::ELOOP) {
                return Err(symlink_refused(name));
            }
            return Err(err);
        }
        let fd = owned(fd);
        let st = regular_file_stat(fd.as_raw_fd(), name)?;
        spec.owner.check(Ownership::of_file(&st), name)?;
        let len = wait_for_size(fd.as_raw_fd(), name, spec.size_if_unsized)?;
        Segment::map_fd_with(
            fd.as_raw_fd(),
            len,
            posix_backing(name),
            name,
            spec.read_only,
        )
    }

    /// Removes the name `name` (mappings stay valid until unmapped).
    pub fn posix_unlink(name: &str) -> Result<()> {
        validate_posix_name(name)?;
        let cname = c_string(name)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 {
            return Err(Error::last_os("shm_unlink", name));
        }
        Ok(())
    }
}

fn posix_backing(name: &str) -> Backing {
    Backing::Posix {
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_posix_name("/ok-name.1").is_ok());
        for bad in ["", "/", "noslash", "/a/b", "/.", "/..", "/a\0b"] {
            assert!(
                matches!(validate_posix_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "x".repeat(256));
        assert!(validate_posix_name(&long).is_err());
    }
}
