//! A regular file mapped shared: `open` + `ftruncate` + `mmap`.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{
    check_len, fd_stat, set_len, wait_for_size, Backing, OpenSpec, OwnerCheck, Segment,
    DEFAULT_MODE,
};
use crate::error::{Error, Result};

fn open_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Os {
        op,
        target: path.display().to_string(),
        source,
    }
}

impl Segment {
    /// Creates the file `path` (`O_CREAT|O_EXCL`, mode 0600) of `len` bytes, zero-filled,
    /// and maps it shared. Fails with `EEXIST` if it exists.
    ///
    /// A file on tmpfs (`/dev/shm`, usually `/tmp` or `$XDG_RUNTIME_DIR`) is memory; on
    /// a disk file system the kernel writes the pages back. Remove it with
    /// `std::fs::remove_file`: dropping the segment never does.
    ///
    /// ```
    /// use shmsync::Segment;
    /// let path = std::env::temp_dir().join(format!("shmsync-doc-file-{}", std::process::id()));
    /// let a = Segment::file_create(&path, 4096)?;
    /// let b = Segment::file_open(&path)?;
    /// std::fs::remove_file(&path).unwrap(); // the mappings stay valid
    /// // SAFETY: both mappings are 4096 bytes long and nothing else uses them.
    /// unsafe {
    ///     a.as_ptr().add(100).write(7);
    ///     assert_eq!(b.as_ptr().add(100).read(), 7);
    /// }
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn file_create(path: impl AsRef<Path>, len: usize) -> Result<Segment> {
        Segment::file_create_with_mode(path, len, DEFAULT_MODE)
    }

    /// As [`file_create`](Self::file_create) with explicit permission bits (subject to
    /// the umask).
    pub fn file_create_with_mode(
        path: impl AsRef<Path>,
        len: usize,
        mode: libc::mode_t,
    ) -> Result<Segment> {
        let path = path.as_ref();
        check_len(len)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| open_error("open(O_CREAT|O_EXCL)", path, e))?;
        let fd = OwnedFd::from(file);
        let target = path.display().to_string();
        let made = set_len(&fd, len, &target)
            .and_then(|()| Segment::map_fd(fd.as_raw_fd(), len, file_backing(path), &target));
        if made.is_err() {
            // We created it; do not leave a half-made file behind. The first error is the
            // one worth reporting.
            let _ = std::fs::remove_file(path);
        }
        made
    }

    /// Opens and maps the existing file `path`, whole. Waits up to
    /// [`super::SIZING_WAIT`] if its creator has not sized it yet.
    ///
    /// Refuses a file owned by another user with [`Error::ForeignOwner`] (use
    /// [`file_open_any_owner`](Self::file_open_any_owner) when that is intended) and
    /// anything but a regular file. A missing file is [`Error::Os`] with `ENOENT`.
    pub fn file_open(path: impl AsRef<Path>) -> Result<Segment> {
        Segment::file_open_checked(path.as_ref(), OpenSpec::new(OwnerCheck::MustBeOurs))
    }

    /// As [`file_open`](Self::file_open), accepting a file owned by any user.
    pub fn file_open_any_owner(path: impl AsRef<Path>) -> Result<Segment> {
        Segment::file_open_checked(path.as_ref(), OpenSpec::new(OwnerCheck::Any))
    }

    /// As [`file_open`](Self::file_open), but a file whose creator never sized it is
    /// sized to `len` after the usual wait (see
    /// [`posix_open_or_size`](Self::posix_open_or_size)).
    pub fn file_open_or_size(path: impl AsRef<Path>, len: usize) -> Result<Segment> {
        Segment::file_open_checked(
            path.as_ref(),
            OpenSpec {
                size_if_unsized: Some(len),
                ..OpenSpec::new(OwnerCheck::MustBeOurs)
            },
        )
    }

    /// Opens and maps the file `path` as `spec` says.
    pub(crate) fn file_open_checked(path: &Path, spec: OpenSpec) -> Result<Segment> {
        let file = File::options()
            .read(true)
            .write(!spec.read_only)
            .open(path)
            .map_err(|e| open_error("open", path, e))?;
        let target = path.display().to_string();
        let st = fd_stat(file.as_raw_fd(), &target)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::InvalidArgument(
                "a file segment must be a regular file",
            ));
        }
        spec.owner.check(st.st_uid, &target)?;
        let len = wait_for_size(file.as_raw_fd(), &target, spec.size_if_unsized)?;
        Segment::map_fd_with(
            file.as_raw_fd(),
            len,
            file_backing(path),
            &target,
            spec.read_only,
        )
    }
}

fn file_backing(path: &Path) -> Backing {
    Backing::File {
        path: path.to_path_buf(),
    }
}
