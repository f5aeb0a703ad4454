//! Finding regions and checking what a name holds without opening it as a region: what
//! `shmsync list` reads, and what `shmsync remove` verifies before unlinking.
//!
//! Every candidate is opened with `O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`
//! relative to an already open directory (a symlink is never followed, a FIFO never
//! blocks), checked with `fstat` on that descriptor (only a regular file is read), and
//! its region header is read with `pread` — nothing is mapped. A SysV segment has no
//! file to read, so it is attached read-only (`SHM_RDONLY`) just long enough to copy the
//! header. Nothing here writes to a segment.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::header::{ObjectHeader, MAGIC, STATE_READY};
use crate::kind::Kind;
use crate::process::{self, Liveness, ProcessIdentity};
use crate::region::Location;

/// Where POSIX shared-memory objects live.
pub const DEV_SHM: &str = "/dev/shm";

/// Bytes of a region header, as `region.rs` lays it out.
const HEADER_LEN: usize = 128;
// Offsets of the region header's fields (see the layout in `region.rs`, whose size
// assertion pins the 128 bytes; the unit tests below check each one against a region).
const OFF_CLAIM: usize = 24;
const OFF_SIZE: usize = 32;
const OFF_CAPACITY: usize = 40;
const OFF_COUNT: usize = 44;
const OFF_NEXT_FREE: usize = 48;
const OFF_CREATOR_PID: usize = 64;
const OFF_CREATOR_START: usize = 72;
const OFF_CREATOR_NS: usize = 80;

/// What backs a candidate.
///
/// ```
/// use shmsync::inspect::probe;
/// use shmsync::{Location, Region};
///
/// let name = format!("/probe-doc-{}", std::process::id());
/// let location = Location::parse(&name)?;
/// let _region = Region::create(&location, 1 << 16)?;
/// let found = probe::probe(&location)?;
/// assert_eq!(found.backing, probe::BackingKind::Posix);
/// assert_eq!(found.backing.as_str(), "posix");
/// # Region::remove(&location)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingKind {
    /// A POSIX shared-memory object in `/dev/shm`.
    Posix,
    /// A SysV shared-memory segment.
    SysV,
    /// A regular file.
    File,
}

impl BackingKind {
    /// `"posix"`, `"sysv"` or `"file"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackingKind::Posix => "posix",
            BackingKind::SysV => "sysv",
            BackingKind::File => "file",
        }
    }
}

/// The processes attached to a candidate.
///
/// ```
/// use shmsync::inspect::probe;
/// use shmsync::{Location, Region};
///
/// let name = format!("/probe-doc-{}", std::process::id());
/// let location = Location::parse(&name)?;
/// let _region = Region::create(&location, 1 << 16)?;
/// let found = probe::probe(&location)?;
/// match found.attached {
///     probe::Attached::Count(n) => println!("{n} attached"),
///     probe::Attached::Pids { ref pids, .. } => println!("mapped by {pids:?}"),
///     probe::Attached::Unknown => println!("attachments unknown"),
/// }
/// # Region::remove(&location)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// SysV: the kernel's attach count (`nattch`).
    Count(u64),
    /// POSIX and files: the processes whose `/proc/<pid>/maps` map this inode.
    /// `complete` is false when some processes' maps could not be read (other users'
    /// processes, unless run as root), so there may be more.
    Pids {
        /// The pids found.
        pids: Vec<u32>,
        /// Whether every process's maps could be read.
        complete: bool,
    },
    /// Not determined (the candidate could not be opened).
    Unknown,
}

/// The fields of a region header, read from a copy (never from a mapping).
///
/// ```
/// use shmsync::inspect::probe;
/// use shmsync::{Location, Region};
///
/// let name = format!("/probe-doc-{}", std::process::id());
/// let location = Location::parse(&name)?;
/// let _region = Region::create(&location, 1 << 16)?;
/// let found = probe::probe(&location)?;
/// if let probe::Content::Region(facts) = &found.content {
///     assert!(facts.ready);
///     assert_eq!(facts.objects, 0);
/// }
/// # Region::remove(&location)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFacts {
    /// Whether initialization finished (`READY`); otherwise it is in progress or its
    /// initializer died.
    pub ready: bool,
    /// Why this build cannot use it (another format, arch, libc…), if so.
    pub incompatible: Option<String>,
    /// Published objects.
    pub objects: u32,
    /// Table capacity.
    pub capacity: u32,
    /// Size recorded at creation.
    pub size: u64,
    /// First free data byte.
    pub used: u64,
    /// The creator's pid and liveness.
    pub creator_pid: u32,
    /// The creator's liveness.
    pub creator: Liveness,
    /// A process holding the table claim, and its liveness.
    pub claim: Option<(u32, Liveness)>,
}

/// What a candidate holds.
///
/// ```
/// use shmsync::inspect::probe;
/// use shmsync::{Location, Region};
///
/// let name = format!("/probe-doc-{}", std::process::id());
/// let location = Location::parse(&name)?;
/// let _region = Region::create(&location, 1 << 16)?;
/// let found = probe::probe(&location)?;
/// assert!(matches!(found.content, probe::Content::Region(_)));
/// # Region::remove(&location)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A shmsync region header.
    Region(HeaderFacts),
    /// A regular file or segment that holds something else (the reason says what).
    NotRegion(String),
    /// Not a regular file (a symlink, FIFO, device, directory…): never opened.
    NotAFile(&'static str),
    /// It could not be read (permission, vanished…).
    Unreadable(String),
}

/// One candidate: a name, what the kernel says about it, and what it holds.
///
/// ```
/// use shmsync::inspect::probe;
/// use shmsync::{Location, Region};
///
/// let name = format!("/probe-doc-{}", std::process::id());
/// let location = Location::parse(&name)?;
/// let _region = Region::create(&location, 1 << 16)?;
/// let found = probe::probe(&location)?;
/// assert!(found.is_region());
/// // SAFETY: geteuid has no preconditions.
/// let euid = unsafe { libc::geteuid() };
/// assert!(found.owned_by(euid));
/// # Region::remove(&location)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Probe {
    /// How the tool names it: `/name`, `sysv:0xKEY` or a path.
    pub location: String,
    /// What backs it.
    pub backing: BackingKind,
    /// Size in bytes.
    pub size: u64,
    /// Owner uid (for SysV, `shm_perm.uid`).
    pub owner_uid: u32,
    /// SysV only: the creator uid (`shm_perm.cuid`), which keeps access too.
    pub creator_uid: Option<u32>,
    /// Permission bits.
    pub mode: u32,
    /// Who has it mapped.
    pub attached: Attached,
    /// Device and inode of the file that was read (POSIX and files).
    pub file_id: Option<(u64, u64)>,
    /// What it holds.
    pub content: Content,
}

impl Probe {
    /// Whether it holds a region header (possibly still initializing).
    pub fn is_region(&self) -> bool {
        matches!(self.content, Content::Region(_))
    }

    /// The [`Location`] to open it by.
    pub fn to_location(&self) -> Result<Location> {
        match self.backing {
            BackingKind::Posix => Ok(Location::Posix(self.location.clone())),
            BackingKind::File => Ok(Location::File(PathBuf::from(&self.location))),
            BackingKind::SysV => Location::parse(&self.location),
        }
    }

    /// Whether `uid` owns it (for SysV: both owner and creator).
    pub fn owned_by(&self, uid: u32) -> bool {
        self.owner_uid == uid && self.creator_uid.map_or(true, |c| c == uid)
    }
}

fn os_err(op: &'static str, target: &str) -> Error {
    Error::last_os(op, target)
}

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidName {
        name: p.display().to_string(),
        reason: "contains a NUL byte",
    })
}

/// Opens a directory to resolve candidates in.
fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let c = c_path(dir)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("open (directory)", &dir.display().to_string()));
    }
    // SAFETY: a descriptor just returned by a successful open, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` inside `dir` for reading without following a symlink or blocking.
fn open_candidate(dir: &OwnedFd, name: &CStr, shown: &str) -> Result<OwnedFd> {
    // SAFETY: `dir` is an open directory descriptor and `name` a valid C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ELOOP) {
            return Err(Error::Os {
                op: "open (a symlink; never followed)",
                target: shown.to_owned(),
                source: e,
            });
        }
        return Err(Error::Os {
            op: "open",
            target: shown.to_owned(),
            source: e,
        });
    }
    // SAFETY: a descriptor just returned by a successful openat, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat` of an open descriptor.
fn fstat(fd: &OwnedFd, shown: &str) -> Result<libc::stat> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for a stat buffer; `fd` is open.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(os_err("fstat", shown));
    }
    // SAFETY: fstat succeeded, so it initialized `st`.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`: what the name points at now.
fn stat_name(dir: &OwnedFd, name: &CStr, shown: &str) -> Result<libc::stat> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage; `dir` is open and `name` a valid C string.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(os_err("lstat", shown));
    }
    // SAFETY: fstatat succeeded, so it initialized `st`.
    Ok(unsafe { st.assume_init() })
}

impl Probe {
    /// Records owner, mode and size from `st`; false (and the content says what it is)
    /// when it is not a regular file.
    fn note_regular_file(&mut self, st: &libc::stat) -> bool {
        self.owner_uid = st.st_uid;
        self.mode = st.st_mode & 0o7777;
        self.size = st.st_size as u64;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            self.content = Content::NotAFile(file_type(st.st_mode));
            return false;
        }
        true
    }
}

fn file_type(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

/// A 128-byte header copy, 8-aligned so it can be viewed as the header's atomics.
#[repr(C, align(8))]
struct HeaderBytes([u8; HEADER_LEN]);

impl HeaderBytes {
    fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_ne_bytes(b)
    }

    /// Judges the copy: a region header, or what it is instead.
    fn content(&mut self) -> Content {
        let magic = self.u32_at(0);
        if magic != MAGIC {
            return Content::NotRegion(if self.0.iter().all(|&b| b == 0) {
                "all zero (no region was ever initialized here)".into()
            } else {
                format!("no shmsync magic (first word {magic:#010x})")
            });
        }
        let kind = self.u32_at(4);
        // SAFETY: the buffer is 128 bytes, 8-aligned, owned by this call and not
        // shared; `ObjectHeader` is 24 bytes of plain atomics, for which every bit
        // pattern is valid. Only loads are made through the reference.
        let header = unsafe { &*self.0.as_mut_ptr().cast::<ObjectHeader>() };
        let ready = header.state() == STATE_READY;
        if kind != Kind::Region as u32 {
            // A region being initialized may not have its kind written yet.
            if ready {
                return Content::NotRegion(match Kind::from_raw(kind) {
                    Some(k) => format!("a shmsync {k}, not a region"),
                    None => format!("shmsync magic with unknown kind {kind}"),
                });
            }
        }
        let incompatible = match header.validate(Kind::Region) {
            Ok(()) | Err(Error::Uninitialized { .. }) => None,
            Err(e) => Some(e.to_string()),
        };
        let creator = ProcessIdentity::new(
            self.u64_at(OFF_CREATOR_PID) as u32,
            self.u64_at(OFF_CREATOR_START),
            self.u64_at(OFF_CREATOR_NS),
        );
        let claim = self.u64_at(OFF_CLAIM);
        Content::Region(HeaderFacts {
            ready,
            incompatible,
            objects: self.u32_at(OFF_COUNT),
            capacity: self.u32_at(OFF_CAPACITY),
            size: self.u64_at(OFF_SIZE),
            used: self.u64_at(OFF_NEXT_FREE),
            creator_pid: creator.pid,
            creator: if ready {
                creator.liveness()
            } else {
                Liveness::Unknown
            },
            claim: (claim != 0)
                .then(|| (claim as u32 & 0x3f_ffff, process::packed_liveness(claim))),
        })
    }
}

/// Reads the header of an open regular file with `pread`.
fn read_header(fd: &OwnedFd, size: u64, shown: &str) -> Content {
    if size < HEADER_LEN as u64 {
        return Content::NotRegion(format!("{size} bytes: too small for a region"));
    }
    let mut buf = HeaderBytes([0; HEADER_LEN]);
    let mut done = 0;
    while done < HEADER_LEN {
        // SAFETY: the destination is the unfilled tail of `buf`; `fd` is open.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.0[done..].as_mut_ptr().cast(),
                HEADER_LEN - done,
                done as libc::off_t,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Content::NotRegion("shorter than a region header".into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Content::Unreadable(format!("pread on {shown:?} failed: {e}"));
            }
        }
    }
    buf.content()
}

/// Probes `name` in the open directory `dir`; `location` is how the tool names it.
///
/// Fails only when the name cannot be looked up at all (it vanished, or the directory
/// is unsearchable); later failures are [`Content::Unreadable`].
fn probe_in(
    dir: &OwnedFd,
    name: &CStr,
    location: String,
    backing: BackingKind,
    maps: &MapsIndex,
) -> Result<Probe> {
    let mut probe = Probe {
        location,
        backing,
        size: 0,
        owner_uid: 0,
        creator_uid: None,
        mode: 0,
        attached: Attached::Unknown,
        file_id: None,
        content: Content::Unreadable(String::new()),
    };
    // What the name is, without opening it: a foreign-mode file is still listed with
    // its owner and mode.
    let st = stat_name(dir, name, &probe.location)?;
    if !probe.note_regular_file(&st) {
        return Ok(probe);
    }
    let opened = open_candidate(dir, name, &probe.location)
        .and_then(|fd| Ok((fstat(&fd, &probe.location)?, fd)));
    let (st, fd) = match opened {
        Ok(v) => v,
        Err(e) => {
            probe.content = Content::Unreadable(e.to_string());
            return Ok(probe);
        }
    };
    // Judge the descriptor, not the name: the name may have changed hands meanwhile.
    if !probe.note_regular_file(&st) {
        return Ok(probe);
    }
    probe.file_id = Some((st.st_dev, st.st_ino));
    probe.attached = maps.attached(st.st_dev, st.st_ino);
    probe.content = read_header(&fd, probe.size, &probe.location);
    Ok(probe)
}

/// Which processes map which inode, from every readable `/proc/<pid>/maps`.
#[derive(Default)]
struct MapsIndex {
    by_inode: BTreeMap<(u32, u32, u64), BTreeSet<u32>>,
    complete: bool,
}

fn dev_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

fn dev_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

impl MapsIndex {
    fn scan() -> MapsIndex {
        let mut index = MapsIndex {
            by_inode: BTreeMap::new(),
            complete: true,
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            index.complete = false;
            return index;
        };
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
                Ok(text) => index.add(pid, &text),
                // Exited meanwhile: it maps nothing any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(_) => index.complete = false,
            }
        }
        index
    }

    /// Adds one process's maps: `start-end perms offset MAJ:MIN inode path`.
    fn add(&mut self, pid: u32, maps: &str) {
        for line in maps.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(_), Some(_), Some(_), Some(dev), Some(ino)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let Some((maj, min)) = dev.split_once(':') else {
                continue;
            };
            let (Ok(maj), Ok(min), Ok(ino)) = (
                u32::from_str_radix(maj, 16),
                u32::from_str_radix(min, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            if ino != 0 {
                self.by_inode
                    .entry((maj, min, ino))
                    .or_default()
                    .insert(pid);
            }
        }
    }

    /// The processes mapping the inode, this one (the tool looking at it) excepted.
    fn attached(&self, dev: u64, ino: u64) -> Attached {
        let me = process::current_pid();
        Attached::Pids {
            pids: self
                .by_inode
                .get(&(dev_major(dev), dev_minor(dev), ino))
                .map(|s| s.iter().copied().filter(|&p| p != me).collect())
                .unwrap_or_default(),
            complete: self.complete,
        }
    }
}

/// Probes every entry of the directory `dir` (not recursively); `location` names each.
fn probe_dir(
    dir: &Path,
    backing: BackingKind,
    location: impl Fn(&std::ffi::OsStr) -> String,
    maps: &MapsIndex,
    out: &mut Vec<Probe>,
) -> Result<()> {
    let dfd = open_dir(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Os {
        op: "read_dir",
        target: dir.display().to_string(),
        source,
    })?;
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let Ok(c) = CString::new(name.as_bytes()) else {
            continue;
        };
        match probe_in(&dfd, &c, location(&name), backing, maps) {
            Ok(p) => out.push(p),
            // Removed since the directory was read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splits a file path into its directory (opened) and last component.
fn split_path(path: &Path) -> Result<(OwnedFd, CString)> {
    let shown = path.display().to_string();
    let name = path.file_name().ok_or_else(|| Error::InvalidName {
        name: shown.clone(),
        reason: "a file region path must end in a file name",
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((open_dir(parent)?, c_path(Path::new(name))?))
}

/// Probes a file path (its last component is never followed).
fn probe_file(path: &Path, maps: &MapsIndex) -> Result<Probe> {
    let (dir, name) = split_path(path)?;
    probe_in(
        &dir,
        &name,
        path.display().to_string(),
        BackingKind::File,
        maps,
    )
}

/// Probes a POSIX name (`/name`), in `/dev/shm`.
fn probe_posix(name: &str, maps: &MapsIndex) -> Result<Probe> {
    crate::segment::validate_posix_name(name)?;
    let dir = open_dir(Path::new(DEV_SHM))?;
    let c = c_path(Path::new(&name[1..]))?;
    probe_in(&dir, &c, name.to_owned(), BackingKind::Posix, maps)
}

/// One line of `/proc/sysvipc/shm`.
#[derive(Clone, Copy, Debug)]
struct SysvRow {
    key: libc::key_t,
    id: libc::c_int,
    mode: u32,
    size: u64,
    nattch: u64,
    uid: u32,
    cuid: u32,
}

/// Parses `/proc/sysvipc/shm` by its header's column names.
fn parse_sysvipc(text: &str) -> Vec<SysvRow> {
    let mut lines = text.lines();
    let Some(head) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = head.split_ascii_whitespace().collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(k), Some(i), Some(p), Some(s), Some(n), Some(u), Some(cu)) = (
        col("key"),
        col("shmid"),
        col("perms"),
        col("size"),
        col("nattch"),
        col("uid"),
        col("cuid"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            Some(SysvRow {
                key: f.get(k)?.parse::<i64>().ok()? as libc::key_t,
                id: f.get(i)?.parse().ok()?,
                mode: u32::from_str_radix(f.get(p)?, 8).ok()? & 0o777,
                size: f.get(s)?.parse().ok()?,
                nattch: f.get(n)?.parse().ok()?,
                uid: f.get(u)?.parse().ok()?,
                cuid: f.get(cu)?.parse().ok()?,
            })
        })
        .collect()
}

/// Attaches SysV segment `id` read-only just long enough to copy its header.
fn read_sysv_header(id: libc::c_int, size: u64, shown: &str) -> Content {
    if size < HEADER_LEN as u64 {
        return Content::NotRegion(format!("{size} bytes: too small for a region"));
    }
    // SAFETY: a read-only attachment at an address the kernel picks; it touches no
    // existing memory and is detached below.
    let ptr = unsafe { libc::shmat(id, core::ptr::null(), libc::SHM_RDONLY) };
    if ptr as isize == -1 {
        let e = std::io::Error::last_os_error();
        return Content::Unreadable(format!("shmat(SHM_RDONLY) on {shown} failed: {e}"));
    }
    let mut buf = HeaderBytes([0; HEADER_LEN]);
    let base = ptr.cast::<u32>().cast_const();
    for (i, chunk) in buf.0.chunks_exact_mut(4).enumerate() {
        // SAFETY: the attachment is at least HEADER_LEN bytes (checked from the
        // segment size) and page aligned; other processes may write the words
        // concurrently, so each is read with an atomic load.
        let w = unsafe { crate::sync::peek_u32(base.add(i)) };
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    // SAFETY: detaching the attachment made above, which nothing else references.
    unsafe { libc::shmdt(ptr) };
    buf.content()
}

fn sysv_location(key: libc::key_t) -> String {
    format!("sysv:{:#x}", key as u32)
}

fn probe_sysv_row(row: SysvRow) -> Probe {
    let location = sysv_location(row.key);
    Probe {
        content: read_sysv_header(row.id, row.size, &location),
        location,
        backing: BackingKind::SysV,
        size: row.size,
        owner_uid: row.uid,
        creator_uid: Some(row.cuid),
        mode: row.mode,
        attached: Attached::Count(row.nattch),
        file_id: None,
    }
}

fn sysv_rows() -> Result<Vec<SysvRow>> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").map_err(|source| Error::Os {
        op: "read",
        target: "/proc/sysvipc/shm".into(),
        source,
    })?;
    Ok(parse_sysvipc(&text))
}

/// Every region on the machine: POSIX objects in `/dev/shm` and SysV segments (by key;
/// `IPC_PRIVATE` ones have no name to open) that carry a region header, plus files and
/// the files in directories given in `paths`. Candidates that could not be read are
/// included (as [`Content::Unreadable`]); anything else that is not a region is not.
/// A directory or table that cannot be read at all is reported in the error list.
pub fn list(paths: &[PathBuf]) -> (Vec<Probe>, Vec<Error>) {
    let maps = MapsIndex::scan();
    let mut all = Vec::new();
    let mut errors = Vec::new();
    if let Err(e) = probe_dir(
        Path::new(DEV_SHM),
        BackingKind::Posix,
        |n| format!("/{}", n.to_string_lossy()),
        &maps,
        &mut all,
    ) {
        errors.push(e);
    }
    match sysv_rows() {
        Ok(rows) => all.extend(
            rows.into_iter()
                .filter(|r| r.key != libc::IPC_PRIVATE)
                .map(probe_sysv_row),
        ),
        Err(e) => errors.push(e),
    }
    for p in paths {
        let is_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        let r = if is_dir {
            probe_dir(
                p,
                BackingKind::File,
                |n| p.join(n).display().to_string(),
                &maps,
                &mut all,
            )
        } else {
            probe_file(p, &maps).map(|probe| all.push(probe))
        };
        if let Err(e) = r {
            errors.push(e);
        }
    }
    all.retain(|p| matches!(p.content, Content::Region(_) | Content::Unreadable(_)));
    (all, errors)
}

/// Probes the candidate a [`Location`] names, without following a symlink, blocking or
/// writing.
pub fn probe(location: &Location) -> Result<Probe> {
    let maps = MapsIndex::scan();
    match location {
        Location::Posix(name) => probe_posix(name, &maps),
        Location::File(path) => probe_file(path, &maps),
        Location::SysV(key) => {
            let rows = sysv_rows()?;
            match rows.into_iter().find(|r| r.key == *key) {
                Some(row) => Ok(probe_sysv_row(row)),
                None => Err(Error::Os {
                    op: "shmget",
                    target: sysv_location(*key),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                }),
            }
        }
    }
}

/// What [`remove`] may remove besides a region of this user's.
///
/// ```
/// use shmsync::inspect::probe::{self, Removal, RemoveOptions};
/// use shmsync::Location;
///
/// // A plain file is not a region: refused, and left intact.
/// let path = std::env::temp_dir().join(format!("not-a-region-{}", std::process::id()));
/// std::fs::write(&path, b"data")?;
/// let location = Location::File(path.clone());
/// let removal = probe::remove(&location, RemoveOptions::default())?;
/// assert!(matches!(removal, Removal::Refused(_)));
/// assert!(path.exists());
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoveOptions {
    /// Remove even what carries no region header (a plain file, another program's
    /// segment).
    pub force: bool,
    /// Remove a region owned by another user.
    pub any_owner: bool,
}

/// What [`remove`] did.
///
/// ```
/// use shmsync::inspect::probe;
/// use shmsync::{Location, Region};
///
/// let name = format!("/probe-doc-{}", std::process::id());
/// let location = Location::parse(&name)?;
/// let _region = Region::create(&location, 1 << 16)?;
/// let found = probe::probe(&location)?;
/// let removal = probe::remove(&location, probe::RemoveOptions::default())?;
/// assert!(matches!(removal, probe::Removal::Removed(_)));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug)]
pub enum Removal {
    /// The name was removed; the probe is what was verified just before.
    Removed(Probe),
    /// Refused and left intact, with the reason.
    Refused(String),
}

/// Removes the region at `location` after checking, on an open descriptor (or a
/// read-only attachment), that it carries a region header and belongs to this user.
/// Anything else is refused and left intact unless `opts` says otherwise. The last path
/// component is never followed: `remove` of a symlink is refused, even with `force`.
///
/// For POSIX and files, the name is unlinked only if it still names the inode that was
/// verified; for SysV the verified segment is removed by id, so a key recreated
/// meanwhile is untouched.
///
/// ```
/// use shmsync::inspect::probe::{self, Content, Removal, RemoveOptions};
/// use shmsync::{Location, Region};
/// let loc = Location::parse(&format!("/shmsync-doc-probe-{}", std::process::id()))?;
/// drop(Region::create(&loc, 1 << 16)?);
/// let p = probe::probe(&loc)?;
/// assert!(matches!(p.content, Content::Region(ref h) if h.ready && h.objects == 0));
/// let removed = probe::remove(&loc, RemoveOptions::default())?;
/// assert!(matches!(removed, Removal::Removed(_)));
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn remove(location: &Location, opts: RemoveOptions) -> Result<Removal> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let maps = MapsIndex::default();
    let verdict = |p: &Probe| -> Option<String> {
        match &p.content {
            Content::Region(_) => {}
            Content::NotAFile(what) => {
                return Some(format!(
                    "{} is {what}, not a region; it is never opened or removed",
                    p.location
                ))
            }
            Content::NotRegion(why) if !opts.force => {
                return Some(format!(
                    "{} is not a shmsync region: {why} (--force removes it anyway)",
                    p.location
                ));
            }
            Content::NotRegion(_) => {}
            Content::Unreadable(why) if !opts.force => {
                return Some(format!(
                    "cannot verify that {} is a shmsync region: {why}",
                    p.location
                ))
            }
            Content::Unreadable(_) => {}
        }
        if !opts.any_owner && !p.owned_by(euid) {
            return Some(format!(
                "{} is owned by uid {}{}, not by this user (uid {euid}); --any-owner removes it",
                p.location,
                p.owner_uid,
                p.creator_uid
                    .filter(|&c| c != p.owner_uid)
                    .map(|c| format!(" (created by uid {c})"))
                    .unwrap_or_default()
            ));
        }
        None
    };
    match location {
        Location::Posix(_) | Location::File(_) => {
            let (dir, name) = match location {
                Location::Posix(n) => {
                    crate::segment::validate_posix_name(n)?;
                    (open_dir(Path::new(DEV_SHM))?, c_path(Path::new(&n[1..]))?)
                }
                Location::File(p) => split_path(p)?,
                Location::SysV(_) => unreachable!("matched above"),
            };
            let shown = location.to_string();
            let probe = probe_in(&dir, &name, shown.clone(), backing_of(location), &maps)?;
            if let Some(why) = verdict(&probe) {
                return Ok(Removal::Refused(why));
            }
            // The name must still point at the verified file (it could only be swapped
            // in the instant between this check and the unlink).
            let now = stat_name(&dir, &name, &shown)?;
            if now.st_mode & libc::S_IFMT != libc::S_IFREG
                || probe
                    .file_id
                    .is_some_and(|id| id != (now.st_dev, now.st_ino))
            {
                return Ok(Removal::Refused(format!(
                    "{shown} changed while it was checked; nothing removed"
                )));
            }
            // SAFETY: `dir` is an open directory and `name` a valid C string; unlinkat
            // never follows the last component.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
                return Err(os_err("unlink", &shown));
            }
            Ok(Removal::Removed(probe))
        }
        Location::SysV(key) => {
            let shown = sysv_location(*key);
            // SAFETY: shmget only reads its scalar arguments.
            let id = unsafe { libc::shmget(*key, 0, 0) };
            if id < 0 {
                return Err(os_err("shmget", &shown));
            }
            let row = sysv_rows()?
                .into_iter()
                .find(|r| r.id == id)
                .ok_or_else(|| Error::NotFound(format!("{shown} in /proc/sysvipc/shm")))?;
            let probe = probe_sysv_row(row);
            if let Some(why) = verdict(&probe) {
                return Ok(Removal::Refused(why));
            }
            // By id: the segment verified above, whatever holds the key now.
            // SAFETY: IPC_RMID ignores the buffer argument.
            if unsafe { libc::shmctl(id, libc::IPC_RMID, core::ptr::null_mut()) } != 0 {
                return Err(os_err("shmctl(IPC_RMID)", &shown));
            }
            Ok(Removal::Removed(probe))
        }
    }
}

fn backing_of(location: &Location) -> BackingKind {
    match location {
        Location::Posix(_) => BackingKind::Posix,
        Location::SysV(_) => BackingKind::SysV,
        Location::File(_) => BackingKind::File,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RawRobustMutex, Region, Segment};

    #[test]
    fn header_offsets_match_the_region_layout() {
        let region = Region::from_segment(Segment::anonymous(1 << 16).unwrap()).unwrap();
        region.get_or_init::<RawRobustMutex>("a", ()).unwrap();
        region.get_or_init::<RawRobustMutex>("b", ()).unwrap();
        let mut buf = HeaderBytes([0; HEADER_LEN]);
        // SAFETY: the mapping is 64 KiB; nobody writes the header meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(region.segment().as_ptr(), buf.0.as_mut_ptr(), 128)
        };
        let Content::Region(h) = buf.content() else {
            panic!("not recognized as a region");
        };
        let (objects, capacity, used, size) = region.usage();
        assert!(h.ready);
        assert_eq!(h.incompatible, None);
        assert_eq!(
            (h.objects, h.capacity, h.used, h.size),
            (objects, capacity, used, size)
        );
        assert_eq!(h.creator_pid, region.creator().pid);
        assert_eq!(h.creator, Liveness::Alive);
        assert_eq!(h.claim, None);
    }

    #[test]
    fn other_content_is_named() {
        let mut zero = HeaderBytes([0; HEADER_LEN]);
        assert!(matches!(zero.content(), Content::NotRegion(w) if w.contains("all zero")));
        let mut junk = HeaderBytes([0x5a; HEADER_LEN]);
        assert!(matches!(junk.content(), Content::NotRegion(w) if w.contains("no shmsync magic")));
    }

    #[test]
    fn sysvipc_is_parsed_by_column_name() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                    1509949453          7   600                 65536  1234  1234      2     0     0  1000     0 0 0 0 4096 0\n";
        let rows = parse_sysvipc(text);
        assert_eq!(rows.len(), 1);
        let r = rows[0];
        assert_eq!(
            (r.key, r.id, r.mode, r.size, r.nattch, r.uid, r.cuid),
            (1509949453, 7, 0o600, 65536, 2, 0, 1000)
        );
    }

    #[test]
    fn maps_lines_index_by_device_and_inode() {
        let mut m = MapsIndex {
            complete: true,
            ..MapsIndex::default()
        };
        m.add(42, "7f00-7f10 rw-s 00000000 00:1a 12345                      /dev/shm/x\n7f10-7f20 r-xp 0 08:01 0 \n");
        let dev = 0x1a; // major 0, minor 0x1a
        assert_eq!(
            m.attached(dev, 12345),
            Attached::Pids {
                pids: vec![42],
                complete: true
            }
        );
        assert_eq!(
            m.attached(dev, 1),
            Attached::Pids {
                pids: vec![],
                complete: true
            }
        );
    }
}
