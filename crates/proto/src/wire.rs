//! The convention every wire format here keeps: each format names its fields once, in its own
//! `mod field`, as the byte range a field occupies ([`Field`]; a one-byte field by its offset),
//! and reads and writes multi-byte fields big-endian through [`read`] (or [`get`], where the
//! buffer may end early) and [`write`].
//!
//! Both panic when the buffer is shorter than the field or the field's width is not the
//! type's: a parser checks the length of what it reads first, and a field table that disagrees
//! with its types is a bug the format's test vectors find.

use core::ops::Range;

/// Where a field lies in its packet or record.
pub type Field = Range<usize>;

/// An integer as the wire carries it: big-endian, `N` bytes.
pub trait BigEndian<const N: usize>: Sized {
    fn from_be(b: [u8; N]) -> Self;
    fn to_be(self) -> [u8; N];
}

macro_rules! big_endian {
    ($($t:ty),*) => {$(
        impl BigEndian<{ core::mem::size_of::<$t>() }> for $t {
            fn from_be(b: [u8; core::mem::size_of::<$t>()]) -> Self {
                <$t>::from_be_bytes(b)
            }
            fn to_be(self) -> [u8; core::mem::size_of::<$t>()] {
                self.to_be_bytes()
            }
        }
    )*};
}
big_endian!(u16, u32, u64, i64);

/// The integer in `field` of `b`.
pub fn read<T: BigEndian<N>, const N: usize>(b: &[u8], field: Field) -> T {
    T::from_be(b[field].try_into().expect("a field as wide as its type"))
}

/// The integer in `field`, or None if `b` ends before the field does (a datagram cut short).
pub fn get<T: BigEndian<N>, const N: usize>(b: &[u8], field: Field) -> Option<T> {
    (b.len() >= field.end).then(|| read(b, field))
}

/// Writes `v` into `field` of `out`.
pub fn write<T: BigEndian<N>, const N: usize>(out: &mut [u8], field: Field, v: T) {
    out[field].copy_from_slice(&v.to_be());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_what_was_written_big_endian() {
        let mut b = [0u8; 16];
        write(&mut b, 2..4, 0x0102u16);
        write(&mut b, 4..8, 0x0304_0506u32);
        write(&mut b, 8..16, -2i64);
        assert_eq!(b[..8], [0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(b[8..], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(read::<u16, 2>(&b, 2..4), 0x0102);
        assert_eq!(read::<u32, 4>(&b, 4..8), 0x0304_0506);
        assert_eq!(read::<i64, 8>(&b, 8..16), -2);
        assert_eq!(read::<u64, 8>(&b, 8..16), u64::MAX - 1);
        assert_eq!(get::<u16, 2>(&b, 14..16), Some(0xfffe));
        assert_eq!(get::<u16, 2>(&b, 15..17), None);
    }

    #[test]
    #[should_panic(expected = "a field as wide as its type")]
    fn a_field_of_the_wrong_width_is_a_bug() {
        let _: u32 = read(&[0u8; 8], 0..2);
    }
}
