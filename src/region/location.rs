//! [`Location`]: where a region lives, parsed from the names the `shmsync` tool
//! accepts, and opening, creating and removing its backing.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::segment::{OpenSpec, Segment};

/// Where a region lives, parsed from the names the `shmsync` tool accepts:
/// `/name` (POSIX shared memory: one leading slash, no other), `sysv:KEY` (decimal or
/// `0x` hex), or a file path (anything else with a `/`, or `file:PATH`).
///
/// ```
/// use shmsync::Location;
///
/// assert_eq!(Location::parse("/orders")?, Location::Posix("/orders".into()));
/// assert_eq!(Location::parse("sysv:0x10")?, Location::SysV(16));
/// assert_eq!(Location::parse("./orders.shm")?, Location::File("./orders.shm".into()));
/// assert_eq!(Location::parse("/orders")?.to_string(), "/orders");
/// # Ok::<(), shmsync::Error>(())
/// ```
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

    pub(super) fn create_segment(&self, size: usize, mode: libc::mode_t) -> Result<Segment> {
        match self {
            Location::Posix(name) => Segment::posix_create_with_mode(name, size, mode),
            Location::SysV(key) => Segment::sysv_create_with_mode(*key, size, mode),
            Location::File(path) => Segment::file_create_with_mode(path, size, mode),
        }
    }

    /// Opens the existing segment as `spec` says (with `size_if_unsized`, an object its
    /// creator abandoned at size 0 is sized; see [`Segment::posix_open_or_size`]; SysV
    /// segments get their size at creation).
    pub(super) fn open_segment(&self, spec: OpenSpec) -> Result<Segment> {
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
}
