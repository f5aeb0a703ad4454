//! [`Kind`]: what kind of object a header heads or a region's table entry records —
//! the one item both the errors and the header speak of, so neither imports the other.

use core::fmt;

/// What kind of object a header heads.
///
/// ```
/// use shmsync::{Kind, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let entries = region.entries()?;
/// assert_eq!(entries[0].kind, Kind::Mutex);
/// println!("{} is a {}", entries[0].name, entries[0].kind); // "lock is a mutex"
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// [`crate::RawRobustMutex`] / [`crate::RobustMutex`].
    Mutex = 1,
    /// [`crate::Condvar`].
    Condvar = 2,
    /// A semaphore (headerless itself; the kind appears in region tables).
    Semaphore = 3,
    /// [`crate::SeqLock`].
    SeqLock = 4,
    /// A region header.
    Region = 5,
    /// A semaphore with a lease table.
    LeasedSemaphore = 6,
    /// [`crate::RobustRwLock`].
    RwLock = 7,
}

impl Kind {
    /// The kind for a raw word, if it names one.
    pub fn from_raw(raw: u32) -> Option<Kind> {
        Some(match raw {
            1 => Kind::Mutex,
            2 => Kind::Condvar,
            3 => Kind::Semaphore,
            4 => Kind::SeqLock,
            5 => Kind::Region,
            6 => Kind::LeasedSemaphore,
            7 => Kind::RwLock,
            _ => return None,
        })
    }

    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Condvar => "condvar",
            Kind::Semaphore => "semaphore",
            Kind::SeqLock => "seqlock",
            Kind::Region => "region",
            Kind::LeasedSemaphore => "leased semaphore",
            Kind::RwLock => "rwlock",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
