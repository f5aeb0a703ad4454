//! A regular file mapped shared: `open` + `ftruncate` + `mmap`.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{
    check_len, non_regular_kind, regular_file_stat, set_len, symlink_refused, wait_for_size,
    Backing, OpenSpec, OwnerCheck, Ownership, Segment, DEFAULT_MODE, OPEN_FLAGS,
};
use crate::error::{Error, Result};

/// Opens `path` with `options` plus [`OPEN_FLAGS`] (no symlink followed, no FIFO waited
/// on, no terminal taken), then refuses anything but a regular file by `fstat` on the
/// descriptor, before anything reads, writes, truncates or maps it. Returns the file and
/// its `fstat`.
fn open_regular(
    options: &mut OpenOptions,
    op: &'static str,
    path: &Path,
) -> Result<(File, libc::stat)> {
    let target = path.display().to_string();
    let file = options
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|source| {
            let last_is_link = source.raw_os_error() == Some(libc::ELOOP)
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if last_is_link {
                symlink_refused(&target)
            } else {
                Error::Os {
                    op,
                    target: target.clone(),
                    source,
                }
            }
        })?;
    let st = regular_file_stat(file.as_raw_fd(), &target)?;
    Ok((file, st))
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
        let (file, _) = open_regular(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode),
            "open(O_CREAT|O_EXCL)",
            path,
        )?;
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
    /// `SIZING_WAIT` (2 s) if its creator has not sized it yet.
    ///
    /// Refuses a file owned by another user ([`Error::ForeignOwner`]) or whose mode lets
    /// group or others access it ([`Error::OpenToOthers`]), both judged by `fstat` on
    /// the opened descriptor (use [`file_open_any_owner`](Self::file_open_any_owner)
    /// when that is intended), and anything but a regular file with [`Error::NotRegularFile`]: a symbolic link at
    /// `path` is not followed (`O_NOFOLLOW`), a FIFO is not waited on (`O_NONBLOCK`), a
    /// device is refused before it is opened. A missing file is [`Error::Os`] with
    /// `ENOENT`.
    pub fn file_open(path: impl AsRef<Path>) -> Result<Segment> {
        Segment::file_open_checked(path.as_ref(), OpenSpec::new(OwnerCheck::MustBeOurs))
    }

    /// As [`file_open`](Self::file_open), accepting a file of any owner and mode (it
    /// must still be a regular file, and our access is what its mode grants).
    #[doc = super::any_owner_warning!()]
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
        let target = path.display().to_string();
        // Refuse what the path plainly is not, without opening it (opening a device can
        // have side effects); the fstat in `open_regular` is what decides, as the path
        // may change between the two.
        if let Some(found) = std::fs::symlink_metadata(path)
            .ok()
            .and_then(|m| non_regular_kind(m.mode()))
        {
            return Err(Error::NotRegularFile { target, found });
        }
        let (file, st) = open_regular(
            File::options().read(true).write(!spec.read_only),
            "open",
            path,
        )?;
        spec.owner.check(Ownership::of_file(&st), &target)?;
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
