//! What a [`Region`](crate::Region) can hold, and how the type of an object is
//! identified across separately built programs.
//!
//! - [`Shared`]: a type that can live in a region under a name (every primitive of this
//!   crate implements it; the implementations sit beside each type).
//! - [`SharedType`]: the value type inside a [`RobustMutex<T>`](crate::RobustMutex) or a
//!   [`SeqLock<T>`](crate::SeqLock) declares a stable name with it, and its layout is
//!   computed by the compiler. [`shared_type!`](crate::shared_type!) declares one and
//!   counts its field offsets too.
//! - [`TypeIdentity`]: what a region's table records about an object's type.
//!
//! # Why a declared name
//!
//! Two programs that share an object must agree on what its bytes mean. Rust's own type
//! names (`core::any::type_name`) differ between crates (`server::Record` is not
//! `client::Record`) and may change with the compiler, so they cannot identify a type
//! across programs. Instead each value type declares a name, by convention
//! `"crate.Type"`, and the identity combines that name with the layout: size,
//! alignment, and the field offsets when they are listed. Two programs that each declare
//! their own `#[repr(C)]` mirror of a struct with the same name and layout share its
//! objects; the same name with a different layout is
//! [`Error::TypeMismatch`](crate::Error::TypeMismatch) naming both layouts.
//!
//! The identity covers the name and the layout, not the field types: a mirror that
//! declares a field `i64` where the other declares `u64` is accepted (every value type is
//! [`AnyBitPattern`](bytemuck::AnyBitPattern), so no bytes are ever invalid, only
//! meaningless). Without a field list, a mirror that reorders equally sized fields is
//! accepted too: list the fields.
//!
//! The built-in value types have fixed names: the integers and floats by their Rust
//! names (`"u64"`, `"f32"`, ...), and arrays as `[T; N]` of their element's identity.
//! The data-less primitives ([`RawRobustMutex`](crate::RawRobustMutex),
//! [`Condvar`](crate::Condvar), [`Semaphore`](crate::Semaphore),
//! [`LeasedSemaphore<N>`](crate::LeasedSemaphore)) need no declaration.
//!
//! ```
//! use shmsync::{Error, Region, RobustMutex, Segment};
//!
//! mod v1 {
//!     #[derive(Clone, Copy, Default, bytemuck::AnyBitPattern)]
//!     #[repr(C)]
//!     pub struct Record { pub id: u64, pub count: u32, pub flags: u32 }
//!     shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags);
//! }
//! mod v2 {
//!     // Another program's idea of the same type, with a field more.
//!     #[derive(Clone, Copy, Default, bytemuck::AnyBitPattern)]
//!     #[repr(C)]
//!     pub struct Record { pub id: u64, pub count: u32, pub flags: u32, pub extra: u64 }
//!     shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags, extra);
//! }
//!
//! let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
//! region.get_or_init::<RobustMutex<v1::Record>>("record", v1::Record::default())?;
//! match region.get::<RobustMutex<v2::Record>>("record") {
//!     Err(e @ Error::TypeMismatch { .. }) => {
//!         let text = e.to_string();
//!         assert!(text.contains("myapp.Record (size 16, align 8"), "{text}");
//!         assert!(text.contains("myapp.Record (size 24, align 8"), "{text}");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), shmsync::Error>(())
//! ```

use crate::error::Result;
use crate::kind::Kind;

/// What a region's table records about an object's type: a hash of its whole identity,
/// and — for the messages that name both sides of a mismatch — the hash of the value
/// type's declared name and that type's size and alignment.
///
/// For a [`RobustMutex<T>`](crate::RobustMutex) or a [`SeqLock<T>`](crate::SeqLock) the
/// value type is `T`; for the data-less primitives it is the primitive itself.
///
/// ```
/// use shmsync::{RobustMutex, Shared, SharedType};
/// let id = <RobustMutex<u64> as Shared>::IDENTITY;
/// assert_eq!((id.size, id.align), (8, 8));
/// assert_eq!(id.name_hash, <u64 as SharedType>::IDENTITY.name_hash);
/// // The same value type under another primitive is another identity.
/// assert_ne!(id.hash, <shmsync::SeqLock<u64> as Shared>::IDENTITY.hash);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TypeIdentity {
    /// Hash of everything below plus the field offsets and the primitive wrapping the
    /// value (64-bit FNV-1a, the same on every build of this format).
    pub hash: u64,
    /// Hash of the value type's declared name.
    pub name_hash: u64,
    /// Size of the value type in bytes.
    pub size: u32,
    /// Alignment of the value type in bytes.
    pub align: u32,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn fnv_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

const fn fnv_u64(h: u64, v: u64) -> u64 {
    fnv_bytes(h, &v.to_le_bytes())
}

const fn to_u32(v: usize) -> u32 {
    // Sizes beyond u32 cannot be placed in a region (its size is checked on append);
    // saturating keeps the recorded value an honest "too big".
    if v > u32::MAX as usize {
        u32::MAX
    } else {
        v as u32
    }
}

impl TypeIdentity {
    /// The identity of a value type `T` declared as `name`, with the offsets of its
    /// fields in declaration order (empty when not listed).
    pub const fn declared<T>(name: &str, field_offsets: &[usize]) -> TypeIdentity {
        let name_hash = fnv_bytes(FNV_OFFSET, name.as_bytes());
        let (size, align) = (core::mem::size_of::<T>(), core::mem::align_of::<T>());
        let mut h = fnv_u64(FNV_OFFSET, name_hash);
        h = fnv_u64(h, size as u64);
        h = fnv_u64(h, align as u64);
        h = fnv_u64(h, field_offsets.len() as u64);
        let mut i = 0;
        while i < field_offsets.len() {
            h = fnv_u64(h, field_offsets[i] as u64);
            i += 1;
        }
        TypeIdentity {
            hash: h,
            name_hash,
            size: to_u32(size),
            align: to_u32(align),
        }
    }

    /// The identity of `[E; len]`, where `E` has identity `element`.
    pub const fn array<T>(element: TypeIdentity, len: usize) -> TypeIdentity {
        let mut name_hash = fnv_bytes(FNV_OFFSET, b"[; ]");
        name_hash = fnv_u64(name_hash, element.name_hash);
        name_hash = fnv_u64(name_hash, len as u64);
        let mut h = fnv_u64(FNV_OFFSET, name_hash);
        h = fnv_u64(h, element.hash);
        h = fnv_u64(h, core::mem::size_of::<T>() as u64);
        TypeIdentity {
            hash: h,
            name_hash,
            size: to_u32(core::mem::size_of::<T>()),
            align: to_u32(core::mem::align_of::<T>()),
        }
    }

    /// This value type's identity inside the primitive named `primitive`: the value's
    /// name and layout stay, the hash also covers the primitive.
    pub const fn within(self, primitive: &str) -> TypeIdentity {
        let h = fnv_bytes(FNV_OFFSET, primitive.as_bytes());
        TypeIdentity {
            hash: fnv_u64(h, self.hash),
            ..self
        }
    }
}

/// A value type with a stable, declared identity: what a [`RobustMutex<T>`] or a
/// [`SeqLock<T>`] in a [`Region`](crate::Region) may hold.
///
/// Declare it with one line, by convention naming the crate and the type:
///
/// ```
/// #[derive(Clone, Copy, bytemuck::AnyBitPattern)]
/// #[repr(C)]
/// struct Record { id: u64, count: u32, flags: u32 }
///
/// // Name, size and alignment:
/// impl shmsync::SharedType for Record {
///     const NAME: &'static str = "myapp.Record";
/// }
/// ```
///
/// or with [`shared_type!`](crate::shared_type!), which also counts the field offsets
/// (so a mirror that reorders fields of equal size is told apart) and refuses to compile
/// if a field is left out of the list:
///
/// ```
/// # #[derive(Clone, Copy, bytemuck::AnyBitPattern)]
/// # #[repr(C)]
/// # struct Record { id: u64, count: u32, flags: u32 }
/// shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags);
/// assert_eq!(<Record as shmsync::SharedType>::FIELD_OFFSETS, &[0, 8, 12]);
/// ```
///
/// Every program that shares the object declares the same name for a type of the same
/// layout; the struct itself may be a separate `#[repr(C)]` mirror in each program. A
/// name is not checked for uniqueness: two unrelated types that declare one name and
/// happen to have one layout are taken for the same type (harmless for memory safety —
/// the type is `AnyBitPattern` — but meaningless), so make names specific.
///
/// [`RobustMutex<T>`]: crate::RobustMutex
/// [`SeqLock<T>`]: crate::SeqLock
pub trait SharedType: bytemuck::AnyBitPattern {
    /// The declared name, e.g. `"myapp.Record"`.
    const NAME: &'static str;

    /// Offsets of the fields in declaration order, or empty when not listed
    /// ([`shared_type!`](crate::shared_type!) computes them with
    /// [`core::mem::offset_of!`]).
    const FIELD_OFFSETS: &'static [usize] = &[];

    /// The identity recorded in a region's table: derived from the name, the size, the
    /// alignment and the field offsets. Keep the default.
    const IDENTITY: TypeIdentity = TypeIdentity::declared::<Self>(Self::NAME, Self::FIELD_OFFSETS);

    /// The name as printed in errors. Keep the default (arrays print `[T; N]`).
    fn display_name() -> String {
        Self::NAME.to_owned()
    }
}

/// Declares a [`SharedType`]: the type, its name, and optionally its fields, whose
/// offsets become part of the identity.
///
/// `shared_type!(Type = "name")` is the one-line trait impl;
/// `shared_type!(Type = "name", fields: a, b, c)` lists every field (tuple structs:
/// `0, 1, ...`) in declaration order. A field missing from the list is a compile error,
/// so the list cannot silently go stale:
///
/// ```compile_fail,E0027
/// #[derive(Clone, Copy, bytemuck::AnyBitPattern)]
/// #[repr(C)]
/// struct Record { id: u64, count: u32, flags: u32 }
/// shmsync::shared_type!(Record = "myapp.Record", fields: id, count);
/// ```
///
/// For a generic type write the trait impl by hand.
#[macro_export]
macro_rules! shared_type {
    ($ty:path = $name:expr) => {
        impl $crate::SharedType for $ty {
            const NAME: &'static str = $name;
        }
    };
    ($ty:path = $name:expr, fields: $($field:tt),+ $(,)?) => {
        impl $crate::SharedType for $ty {
            const NAME: &'static str = $name;
            const FIELD_OFFSETS: &'static [usize] = &[$(::core::mem::offset_of!($ty, $field)),+];
        }
        const _: () = {
            // Refuses to compile when a field is missing from the list: the pattern
            // names every field and has no `..`.
            #[allow(dead_code)]
            fn every_field_is_listed(value: &$ty) {
                let $ty { $($field: _),+ } = value;
            }
        };
    };
}

macro_rules! builtin_shared_types {
    ($($t:ty),*) => {
        $(impl SharedType for $t {
            const NAME: &'static str = stringify!($t);
        })*
    };
}

builtin_shared_types!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

/// The declared name of a built-in type (a primitive of this crate or a number) with
/// this name hash, to name what a table records when it is not the type asked for.
pub(crate) fn builtin_name(name_hash: u64) -> Option<&'static str> {
    const NAMES: [&str; 18] = [
        "shmsync.RawRobustMutex",
        "shmsync.Condvar",
        "shmsync.Semaphore",
        "shmsync.LeasedSemaphore",
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "usize",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "isize",
        "f32",
        "f64",
    ];
    NAMES
        .into_iter()
        .find(|n| fnv_bytes(FNV_OFFSET, n.as_bytes()) == name_hash)
}

impl<T: SharedType, const N: usize> SharedType for [T; N]
where
    [T; N]: bytemuck::AnyBitPattern,
{
    /// Unused by the identity, which is the element's identity and `N`.
    const NAME: &'static str = "[T; N]";
    const IDENTITY: TypeIdentity = TypeIdentity::array::<[T; N]>(T::IDENTITY, N);

    fn display_name() -> String {
        format!("[{}; {N}]", T::display_name())
    }
}

/// A type that can live in a [`Region`](crate::Region) under a name.
///
/// # Safety
///
/// Behavior is undefined if an implementation:
/// - has a `KIND` other than the kind of header (if any) `init_at` writes;
/// - has an `init_at` that does not fully initialize a valid `Self` at `ptr`, or an
///   `attach` that returns a reference without validating what it can of the bytes
///   (a type for which every bit pattern is valid needs no validation);
/// - is not safe to share between processes (no pointers, no process-local state).
pub unsafe trait Shared: Sync + Sized {
    /// The kind recorded in the table.
    const KIND: Kind;
    /// The type identity recorded in the table; an object is handed out only as a type
    /// with the same kind and identity.
    const IDENTITY: TypeIdentity;
    /// What `init_at` needs (the initial value).
    type Init;

    /// The name of the value type that [`IDENTITY`](Self::IDENTITY) describes, as
    /// printed in errors.
    fn value_name() -> String;

    /// Initializes a `Self` in place.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for writes of `size_of::<Self>()` bytes, aligned, for `'a`;
    /// - any other thread or process accesses the bytes during the call.
    unsafe fn init_at<'a>(ptr: *mut Self, init: Self::Init) -> Result<&'a Self>;

    /// Validates and borrows a `Self` another process initialized.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<Self>()` bytes, aligned,
    ///   for `'a`;
    /// - the object is being initialized concurrently.
    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Record {
        id: u64,
        count: u32,
        flags: u32,
    }
    crate::shared_type!(Record = "test.Record", fields: id, count, flags);

    /// Same name, same size and alignment, fields in another order.
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Reordered {
        count: u32,
        flags: u32,
        id: u64,
    }
    crate::shared_type!(Reordered = "test.Record", fields: id, count, flags);

    /// Same name and layout, declared without a field list.
    #[derive(Clone, Copy, bytemuck::AnyBitPattern)]
    #[repr(C)]
    struct Unlisted(u64, u32, u32);
    impl SharedType for Unlisted {
        const NAME: &'static str = "test.Record";
    }

    #[derive(Clone, Copy, bytemuck::AnyBitPattern)]
    #[repr(C)]
    struct Tuple(u64, u32, u32);
    crate::shared_type!(Tuple = "test.Record", fields: 0, 1, 2);

    #[test]
    fn identity_is_name_and_layout() {
        assert_eq!(Record::FIELD_OFFSETS, &[0, 8, 12]);
        assert_eq!(Reordered::FIELD_OFFSETS, &[8, 0, 4]);
        assert_eq!(Tuple::FIELD_OFFSETS, &[0, 8, 12]);
        // A mirror with the same name and field offsets is the same type.
        assert_eq!(Record::IDENTITY, Tuple::IDENTITY);
        // Reordering changes the offsets and so the identity, not the name.
        assert_ne!(Record::IDENTITY.hash, Reordered::IDENTITY.hash);
        assert_eq!(Record::IDENTITY.name_hash, Reordered::IDENTITY.name_hash);
        // Listing the fields is part of the identity.
        assert_ne!(Record::IDENTITY.hash, Unlisted::IDENTITY.hash);
        assert_eq!((Record::IDENTITY.size, Record::IDENTITY.align), (16, 8));
    }

    #[test]
    fn builtin_identities_are_fixed() {
        // Pinned: these values are recorded in regions; they must not change within a
        // format version.
        assert_eq!(u64::IDENTITY.name_hash, fnv_bytes(FNV_OFFSET, b"u64"));
        assert_eq!(u64::IDENTITY.hash, 0xad76_96f9_585e_e6a0);
        assert_ne!(u32::IDENTITY, i32::IDENTITY);
        assert_ne!(u32::IDENTITY, f32::IDENTITY);
        assert_eq!(<[u64; 2]>::display_name(), "[u64; 2]");
        assert_eq!(<[[u8; 3]; 2]>::display_name(), "[[u8; 3]; 2]");
        assert_ne!(<[u64; 2]>::IDENTITY, <[u64; 3]>::IDENTITY);
        assert_ne!(<[u32; 2]>::IDENTITY, <[i32; 2]>::IDENTITY);
        assert_ne!(<[Record; 2]>::IDENTITY, <[Reordered; 2]>::IDENTITY);
        assert_eq!(<[u64; 2]>::IDENTITY.size, 16);
        assert_eq!(builtin_name(u64::IDENTITY.name_hash), Some("u64"));
        assert_eq!(builtin_name(Record::IDENTITY.name_hash), None);
        use crate::{Condvar, LeasedSemaphore, RawRobustMutex, Semaphore};
        for id in [
            RawRobustMutex::IDENTITY,
            Condvar::IDENTITY,
            Semaphore::IDENTITY,
            LeasedSemaphore::<8>::IDENTITY,
        ] {
            assert!(builtin_name(id.name_hash).is_some());
        }
        assert_ne!(
            u64::IDENTITY.within("shmsync.RobustMutex").hash,
            u64::IDENTITY.within("shmsync.SeqLock").hash
        );
    }
}
