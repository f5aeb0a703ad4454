//! The region's table: the entries (kind, placement and type identity of each named
//! object), reading and validating them, lookup by name, and appending a new object
//! under the claim.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::failpoint::failpoint;
use crate::futex::Deadline;
use crate::kind::Kind;
use crate::shared::{Shared, TypeIdentity};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

use super::{
    data_start_for, Region, DEFAULT_WAIT, ENTRY_SIZE, HEADER_SIZE, MAX_CAPACITY, MAX_NAME_LEN, PAGE,
};

#[repr(C)]
pub(super) struct Entry {
    kind: AtomicU32,
    align: AtomicU32,
    offset: AtomicU64,
    size: AtomicU64,
    /// [`TypeIdentity`] of the object's type, field by field.
    type_hash: AtomicU64,
    type_name_hash: AtomicU64,
    value_size: AtomicU32,
    value_align: AtomicU32,
    name_len: AtomicU32,
    _pad: AtomicU32,
    name: [AtomicU64; MAX_NAME_LEN / 8],
}

/// A table entry, as read and validated from the segment.
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let entry = &region.entries()?[0];
/// assert_eq!((entry.name.as_str(), entry.kind), ("lock", shmsync::Kind::Mutex));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The object's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Offset from the region's base.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Alignment in bytes.
    pub align: u32,
    /// The identity of its type (see [`Shared::IDENTITY`]).
    pub identity: TypeIdentity,
}

impl Region {
    fn entry(&self, index: u32) -> &Entry {
        debug_assert!(HEADER_SIZE + (index as usize + 1) * ENTRY_SIZE <= self.seg.len());
        // SAFETY: callers pass `index < capacity` where `capacity` was validated so the
        // whole table lies inside the mapping; entries are 8-aligned at
        // 128 + index × 80 from a page-aligned base and all atomics.
        unsafe {
            &*self
                .seg
                .as_ptr()
                .add(HEADER_SIZE + index as usize * ENTRY_SIZE)
                .cast::<Entry>()
        }
    }

    /// Reads and validates every published entry.
    pub fn entries(&self) -> Result<Vec<EntryInfo>> {
        let h = self.header();
        // Relaxed: validated at open; re-checked here because a hostile peer could
        // have changed it since.
        let capacity = h.capacity.load(Ordering::Relaxed);
        if capacity == 0
            || capacity > MAX_CAPACITY
            || data_start_for(capacity) > self.seg.len() as u64
        {
            return Err(Error::Corrupt(format!("table capacity {capacity}")));
        }
        // Acquire: pairs with the Release increment in `append`, which published the
        // entries and the objects below this count.
        let count = h.count.load(Ordering::Acquire);
        if count > capacity {
            return Err(Error::Corrupt(format!(
                "{count} entries in a table of {capacity}"
            )));
        }
        let data_start = data_start_for(capacity);
        let len = self.seg.len() as u64;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            out.push(self.read_entry(i, data_start, len)?);
        }
        let mut spans: Vec<(u64, u64, usize)> = out
            .iter()
            .enumerate()
            .map(|(i, e)| (e.offset, e.offset + e.size, i))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(Error::Corrupt(format!(
                    "objects {:?} and {:?} overlap",
                    out[pair[0].2].name, out[pair[1].2].name
                )));
            }
        }
        Ok(out)
    }

    fn read_entry(&self, index: u32, data_start: u64, len: u64) -> Result<EntryInfo> {
        let e = self.entry(index);
        let corrupt = |what: String| Error::Corrupt(format!("table entry {index}: {what}"));
        // Relaxed (all): published by the Release on `count`, which the caller loaded
        // with Acquire.
        let raw_kind = e.kind.load(Ordering::Relaxed);
        let kind = Kind::from_raw(raw_kind).ok_or_else(|| corrupt(format!("kind {raw_kind}")))?;
        let align = e.align.load(Ordering::Relaxed);
        let offset = e.offset.load(Ordering::Relaxed);
        let size = e.size.load(Ordering::Relaxed);
        if !align.is_power_of_two() || align > PAGE as u32 {
            return Err(corrupt(format!("alignment {align}")));
        }
        let end = offset
            .checked_add(size)
            .ok_or_else(|| corrupt("size overflows".into()))?;
        if size == 0 || offset < data_start || end > len || offset % u64::from(align) != 0 {
            return Err(corrupt(format!(
                "span {offset}..{end} outside {data_start}..{len}"
            )));
        }
        let name_len = e.name_len.load(Ordering::Relaxed) as usize;
        if name_len == 0 || name_len > MAX_NAME_LEN {
            return Err(corrupt(format!("name length {name_len}")));
        }
        let mut bytes = [0u8; MAX_NAME_LEN];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&e.name) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let name = core::str::from_utf8(&bytes[..name_len])
            .map_err(|_| corrupt("name is not UTF-8".into()))?
            .to_owned();
        Ok(EntryInfo {
            name,
            kind,
            offset,
            size,
            align,
            identity: TypeIdentity {
                hash: e.type_hash.load(Ordering::Relaxed),
                name_hash: e.type_name_hash.load(Ordering::Relaxed),
                size: e.value_size.load(Ordering::Relaxed),
                align: e.value_align.load(Ordering::Relaxed),
            },
        })
    }

    /// The object named `name`, of type `T`, if it exists.
    ///
    /// The table must record `T`'s kind and [`TypeIdentity`] (for a
    /// [`RobustMutex<V>`](crate::RobustMutex) or [`SeqLock<V>`](crate::SeqLock): `V`'s
    /// declared name and layout, see [`SharedType`](crate::SharedType)); otherwise
    /// [`Error::TypeMismatch`] names both types.
    ///
    /// On a [read-only](Self::is_read_only) region this is [`Error::ReadOnly`]: the
    /// objects' methods write to the mapping.
    pub fn get<T: Shared>(&self, name: &str) -> Result<&T> {
        self.check_writable("get")?;
        validate_object_name(name)?;
        let entries = self.entries()?;
        match entries.iter().find(|e| e.name == name) {
            Some(e) => self.attach_entry::<T>(e),
            None => Err(Error::NotFound(format!("object {name:?}"))),
        }
    }

    /// The object named `name`, creating and initializing it with `init` if it does not
    /// exist yet. Races between processes are safe: exactly one initializes it; the
    /// others wait (up to [`DEFAULT_WAIT`](Region::DEFAULT_WAIT)) and then attach; if the initializer dies,
    /// another process takes over. [`Error::ReadOnly`] on a read-only region.
    pub fn get_or_init<T: Shared>(&self, name: &str, init: T::Init) -> Result<&T> {
        self.get_or_init_with(name, init, DEFAULT_WAIT)
    }

    /// [`get_or_init`](Self::get_or_init) with an explicit bound on waiting for another
    /// process's table append.
    pub fn get_or_init_with<T: Shared>(
        &self,
        name: &str,
        init: T::Init,
        wait: Duration,
    ) -> Result<&T> {
        self.check_writable("get_or_init")?;
        validate_object_name(name)?;
        if let Some(e) = self.entries()?.into_iter().find(|e| e.name == name) {
            return self.attach_entry::<T>(&e);
        }
        self.append::<T>(name, init, Deadline::after(wait))
    }

    #[cold]
    fn append<T: Shared>(&self, name: &str, init: T::Init, deadline: Deadline) -> Result<&T> {
        let claim = self.claim_until(deadline)?;
        // Re-read under the claim: another process may have appended it meanwhile.
        let entries = self.entries()?;
        if let Some(e) = entries.iter().find(|e| e.name == name) {
            drop(claim);
            return self.attach_entry::<T>(e);
        }
        let h = self.header();
        // Relaxed: `entries()` validated capacity and count just now, and only the
        // claim holder (us) changes them.
        let capacity = h.capacity.load(Ordering::Relaxed);
        let index = entries.len() as u32;
        if index >= capacity {
            return Err(Error::Full("region table"));
        }
        let (size, align) = (
            core::mem::size_of::<T>() as u64,
            core::mem::align_of::<T>() as u64,
        );
        if size == 0 || align > PAGE {
            return Err(Error::InvalidArgument(
                "zero-sized or over-aligned shared type",
            ));
        }
        let len = self.seg.len() as u64;
        let data_start = data_start_for(capacity);
        // The first free byte is after every published object; a bump pointer left
        // beyond that by a claimant that died mid-append is reset, reclaiming its space.
        let next_free = entries
            .iter()
            .map(|e| e.offset + e.size)
            .max()
            .unwrap_or(data_start)
            .max(data_start);
        let offset = next_free.div_ceil(align) * align;
        let end = offset
            .checked_add(size)
            .filter(|&end| end <= len)
            .ok_or(Error::Full("region space"))?;

        let e = self.entry(index);
        let mut name_words = [0u8; MAX_NAME_LEN];
        name_words[..name.len()].copy_from_slice(name.as_bytes());
        // Relaxed (all entry stores): published by the Release increment of `count`.
        e.kind.store(T::KIND as u32, Ordering::Relaxed);
        e.align.store(align as u32, Ordering::Relaxed);
        e.offset.store(offset, Ordering::Relaxed);
        e.size.store(size, Ordering::Relaxed);
        e.type_hash.store(T::IDENTITY.hash, Ordering::Relaxed);
        e.type_name_hash
            .store(T::IDENTITY.name_hash, Ordering::Relaxed);
        e.value_size.store(T::IDENTITY.size, Ordering::Relaxed);
        e.value_align.store(T::IDENTITY.align, Ordering::Relaxed);
        e.name_len.store(name.len() as u32, Ordering::Relaxed);
        for (word, chunk) in e.name.iter().zip(name_words.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        h.next_free.store(end, Ordering::Relaxed);
        // SAFETY: `offset..end` lies inside the mapping (checked), is aligned for T
        // (offset is a multiple of align_of::<T>() from a page-aligned base), is
        // disjoint from the table and every published object (it starts after all of
        // them), and no other process touches it: it is unpublished and we hold the
        // claim. The reference borrows `self`, which owns the mapping.
        let object =
            unsafe { T::init_at(self.seg.as_ptr().add(offset as usize).cast::<T>(), init)? };
        failpoint("object-init");
        // Release: publishes the entry and the initialized object; pairs with the
        // Acquire load of `count` in `entries`.
        h.count.store(index + 1, Ordering::Release);
        drop(claim);
        Ok(object)
    }

    /// The object of a table entry read by [`entries`](Self::entries), as `T` (checked
    /// like [`get`](Self::get), without reading the table again). Not refused on a
    /// read-only region, whose mapping is `PROT_READ`: callers (the tool's read-only
    /// inspection) call only methods that read.
    pub(crate) fn attach_entry<T: Shared>(&self, e: &EntryInfo) -> Result<&T> {
        if e.kind != T::KIND
            || e.identity != T::IDENTITY
            || e.size != core::mem::size_of::<T>() as u64
            || e.align != core::mem::align_of::<T>() as u32
        {
            return Err(type_mismatch::<T>(e));
        }
        // SAFETY: `entries()` validated that `offset..offset+size` lies inside the
        // mapping, past the table, aligned for T (align matches T's, checked above), and
        // overlaps no other object; it was published READY (count, Acquire). The
        // reference borrows `self`, which owns the mapping.
        unsafe { T::attach(self.seg.as_ptr().add(e.offset as usize).cast::<T>()) }
    }

    /// A raw pointer to a table entry's object, for tools that inspect objects by kind
    /// without knowing their Rust type. Validated like [`get`](Self::get) except for the
    /// type.
    pub fn object_ptr(&self, e: &EntryInfo) -> Result<*const u8> {
        let len = self.seg.len() as u64;
        if e.offset.checked_add(e.size).map_or(true, |end| end > len) {
            return Err(Error::Corrupt(format!(
                "object {:?} outside the region",
                e.name
            )));
        }
        // SAFETY: in bounds (checked above).
        Ok(unsafe { self.seg.as_ptr().add(e.offset as usize) })
    }
}

/// The error for an entry whose type is not `T`, naming both sides: the value type's
/// name (the stored name is known only when its hash equals `T`'s), size, alignment and
/// identity hash, and the kind and size of the object.
#[cold]
fn type_mismatch<T: Shared>(e: &EntryInfo) -> Error {
    let want = T::IDENTITY;
    let stored_name = if e.identity.name_hash == want.name_hash {
        T::value_name()
    } else if let Some(name) = crate::shared::builtin_name(e.identity.name_hash) {
        name.to_owned()
    } else {
        format!("a type with name hash {:#018x}", e.identity.name_hash)
    };
    let describe = |name: &str, kind: Kind, id: &TypeIdentity, object_size: u64| {
        format!(
            "{name} (size {}, align {}, type hash {:#018x}) in a {kind} of {object_size} bytes",
            id.size, id.align, id.hash
        )
    };
    Error::TypeMismatch {
        name: e.name.clone(),
        stored: describe(&stored_name, e.kind, &e.identity, e.size),
        requested: describe(
            &T::value_name(),
            T::KIND,
            &want,
            core::mem::size_of::<T>() as u64,
        ),
    }
}

/// Object names: 1..=40 bytes of UTF-8 without control characters.
///
/// A control character (Unicode category Cc: the C0 range with NUL and ESC, DEL, and
/// the C1 range) is refused because names are shown to people — a terminal escape in a
/// name could erase or forge the lines a tool prints.
fn validate_object_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 40 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.chars().any(char::is_control) {
        "contains a control character (C0, DEL or C1), which could act as a terminal \
         escape when the name is displayed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Segment;

    fn mismatch<T: Shared>(region: &Region, name: &str) -> (String, String) {
        match region.get::<T>(name) {
            Err(Error::TypeMismatch {
                stored, requested, ..
            }) => (stored, requested),
            Err(e) => panic!("{name}: not a type mismatch: {e}"),
            Ok(_) => panic!("{name}: attached as another type"),
        }
    }

    #[test]
    fn a_type_mismatch_names_both_types() {
        use crate::{Condvar, RobustMutex, Semaphore};
        let region = Region::from_segment(Segment::anonymous(1 << 16).unwrap()).unwrap();
        region.get_or_init::<RobustMutex<u64>>("m", 1).unwrap();
        region.get_or_init::<Condvar>("cv", ()).unwrap();

        let (stored, requested) = mismatch::<RobustMutex<u32>>(&region, "m");
        assert!(
            stored.starts_with("u64 (size 8, align 8, type hash 0x"),
            "{stored}"
        );
        assert!(stored.ends_with("in a mutex of 72 bytes"), "{stored}");
        assert!(
            requested.starts_with("u32 (size 4, align 4, "),
            "{requested}"
        );
        let (stored, requested) = mismatch::<Condvar>(&region, "m");
        assert!(stored.starts_with("u64 "), "{stored}");
        assert!(
            requested.starts_with("shmsync.Condvar (size 8, align 4"),
            "{requested}"
        );
        assert!(
            requested.ends_with("in a condvar of 8 bytes"),
            "{requested}"
        );
        let (stored, requested) = mismatch::<Semaphore>(&region, "cv");
        assert!(stored.starts_with("shmsync.Condvar "), "{stored}");
        assert!(requested.starts_with("shmsync.Semaphore "), "{requested}");
        // The right type still attaches.
        assert!(region.get::<RobustMutex<u64>>("m").is_ok());
    }
}
