//! Growable f32 buffers that start on a cache line.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Values per cache line (64 bytes; one AVX-512 register).
const LINE: usize = 16;

/// One cache line of values: the unit a [`Buffer`] grows by.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; LINE]);

/// A growable run of f32 values starting on a 64-byte boundary, so that a
/// kernel's vector loads and stores of 16 values from a multiple of 16 never
/// straddle two cache lines (the allocator's 16-byte alignment makes every
/// such access touch two lines). Derefs to `[f32]`.
#[derive(Clone, Default)]
pub struct Buffer {
    lines: Vec<Line>,
    len: usize,
}

impl Buffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Buffer { lines: Vec::new(), len: 0 }
    }

    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut b = Buffer::new();
        b.resize(len, 0.0);
        b
    }

    /// Sets the length to `len`, new values set to `value` (values below
    /// both lengths kept), as `Vec::resize`.
    pub fn resize(&mut self, len: usize, value: f32) {
        let old = self.len;
        self.lines.resize(len.div_ceil(LINE), Line([0.0; LINE]));
        self.len = len;
        if len > old {
            self[old..].fill(value);
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        self
    }
}

impl From<&[f32]> for Buffer {
    fn from(values: &[f32]) -> Self {
        let mut b = Buffer::zeros(values.len());
        b.copy_from_slice(values);
        b
    }
}

impl Deref for Buffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; LINE]`, so the lines are
        // LINE * lines.len() consecutive initialised f32s, and len <= that.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, through the unique borrow of the lines.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

impl fmt::Debug for Buffer {
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
    }
}
