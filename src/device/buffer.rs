//! Growable buffers of f32 (or u32, f64) values that start on a cache line.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Values per line: 16, one AVX-512 register of f32 or u32 (64 bytes; two lines of f64).
const LINE: usize = 16;

/// One line of values: the unit a [`Buffer`] grows by.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line<T>([T; LINE]);

impl<T> Line<T> {
    /// Stops the build of a buffer whose lines would hold padding (values of
    /// other than 4 or 8 bytes), which the slice over its lines relies on not.
    const UNPADDED: () = assert!(size_of::<Line<T>>() == LINE * size_of::<T>(), "a line is LINE values, no padding");
}

/// A growable run of values starting on a 64-byte boundary, so that a
/// kernel's vector loads and stores of 16 f32 (or u32) values from a multiple
/// of 16 never straddle two cache lines (the allocator's 16-byte alignment
/// makes every such access touch two lines). Derefs to `[T]`.
#[derive(Clone, Default)]
pub struct Buffer<T: Copy + Default = f32> {
    lines: Vec<Line<T>>,
    len: usize,
}

impl<T: Copy + Default> Buffer<T> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Buffer { lines: Vec::new(), len: 0 }
    }

    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut b = Buffer::new();
        b.resize(len, T::default());
        b
    }

    /// Sets the length to `len`, new values set to `value` (values below
    /// both lengths kept), as `Vec::resize`.
    pub fn resize(&mut self, len: usize, value: T) {
        let old = self.len;
        self.lines.resize(len.div_ceil(LINE), Line([T::default(); LINE]));
        self.len = len;
        if len > old {
            self[old..].fill(value);
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        self
    }
}

impl<T: Copy + Default> From<&[T]> for Buffer<T> {
    fn from(values: &[T]) -> Self {
        let mut b = Buffer::zeros(values.len());
        b.copy_from_slice(values);
        b
    }
}

impl<T: Copy + Default> Deref for Buffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        let () = Line::<T>::UNPADDED;
        // SAFETY: `Line` is `repr(C)` over `[T; LINE]` without padding (asserted:
        // 16 values of 4 or 8 bytes fill one or two 64-byte alignments), so the
        // lines are LINE * lines.len() consecutive initialised values, and len <= that.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Copy + Default> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let () = Line::<T>::UNPADDED;
        // SAFETY: as in `deref`, through the unique borrow of the lines.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Copy + Default> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} values)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_cache_line_and_resize_as_vectors_do() {
        let mut b = Buffer::default();
        assert!(b.is_empty());
        b.resize(5, 1.5);
        assert_eq!(b.as_slice(), &[1.5; 5]);
        b[2] = 7.0;
        b.resize(40, -1.0);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert_eq!(&b[..5], &[1.5, 1.5, 7.0, 1.5, 1.5]);
        assert!(b[5..].iter().all(|&v| v == -1.0) && b.len() == 40);
        b.resize(3, 0.0);
        assert_eq!(b.as_slice(), &[1.5, 1.5, 7.0]);
        // Values past a shrink are set again on growth, as a vector's would be.
        b.resize(6, 2.0);
        assert_eq!(b.as_slice(), &[1.5, 1.5, 7.0, 2.0, 2.0, 2.0]);
        let c = b.clone();
        assert_eq!(c.as_slice(), b.as_slice());
        assert_eq!(c.as_ptr() as usize % 64, 0);
        let d = Buffer::from(&[3.0, 4.0][..]);
        assert_eq!(d.as_slice(), &[3.0, 4.0]);
        assert_eq!(d.as_ptr() as usize % 64, 0);
        // Indices (a pooling's argmax) and wide sums start on a line too.
        let mut u = Buffer::<u32>::zeros(1000);
        assert_eq!((u.as_ptr() as usize % 64, u.len()), (0, 1000));
        u.resize(2000, 9);
        assert_eq!((u.as_ptr() as usize % 64, u[999], u[1000]), (0, 0, 9));
        let w = Buffer::<f64>::zeros(33);
        assert_eq!((w.as_ptr() as usize % 64, w.len()), (0, 33));
    }
}
