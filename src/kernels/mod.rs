//! The math, as plain functions over slices: no shapes objects, no allocation,
//! no threads. The CPU device (`device::cpu`) splits the work and calls these;
//! each SIMD path has a plain scalar reference beside it, tested against it.

use multiversion::multiversion;

pub mod activation;
pub mod batch_norm;
pub mod conv_direct;
pub mod conv_pool_grad;
pub mod conv_pool_winograd;
pub mod conv_wide;
pub mod depthwise;
pub mod im2col;
pub mod matmul;
pub mod narrow;
pub mod packed;
pub mod pool;
pub mod resample;
pub mod winograd;

/// The SIMD instruction sets that the fast kernels are written for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    /// AVX-512F: 16 lanes, 32 registers.
    Avx512,
    /// AVX2 with FMA: 8 lanes, 16 registers.
    Avx2,
}

impl Isa {
    /// Every set, the widest first.
    pub const ALL: [Isa; 2] = [Isa::Avx512, Isa::Avx2];

    /// Whether this CPU has the instruction set.
    pub fn present(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match self {
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
        };
        #[allow(unreachable_code)]
        false
    }

    /// The sets this CPU has, the widest first.
    pub fn present_sets() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.present())
    }
}

/// The widest of [`Isa`] this CPU has, if any.
pub fn isa() -> Option<Isa> {
    Isa::present_sets().next()
}

/// `acc += part` elementwise: the ordered reduction of per-task partial sums.
#[inline]
pub fn add_assign(acc: &mut [f32], part: &[f32]) {
    for (a, p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}

/// Rows and columns of the source per block of [`transpose`]: a block's
/// reads and writes stay in L1 while it is turned.
const TRANSPOSE_BLOCK: usize = 16;

/// a: (rows, cols) -> t: (cols, rows), in blocks of rows and columns.
pub fn transpose(a: &[f32], rows: usize, cols: usize, t: &mut [f32]) {
    transpose_ld(a, (rows, cols, cols), t, rows);
}

/// [`transpose`] between blocks of wider matrices: a (rows, cols) with rows
/// `lda` apart -> t (cols, rows) with rows `ldt` apart; t's values past
/// `rows` in each row are left as they are. Where the CPU has AVX, blocks of
/// 8 x 8 are turned in registers (a copy: the same values whatever the path).
pub fn transpose_ld(a: &[f32], (rows, cols, lda): (usize, usize, usize), t: &mut [f32], ldt: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(cols <= lda && rows <= ldt, "a row holds more than its stride");
    assert!(a.len() >= (rows - 1) * lda + cols && t.len() >= (cols - 1) * ldt + rows, "transpose out of bounds");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; the bounds are asserted above.
        unsafe { transpose_ld_avx2(a, (rows, cols, lda), t, ldt) };
        return;
    }
    transpose_ld_scalar(a, (rows, cols, lda), t, ldt);
}

/// Portable reference version of [`transpose_ld`] (bounds as it asserts).
pub fn transpose_ld_scalar(a: &[f32], (rows, cols, lda): (usize, usize, usize), t: &mut [f32], ldt: usize) {
    for r0 in (0..rows).step_by(TRANSPOSE_BLOCK) {
        let r1 = (r0 + TRANSPOSE_BLOCK).min(rows);
        for c0 in (0..cols).step_by(TRANSPOSE_BLOCK) {
            for c in c0..(c0 + TRANSPOSE_BLOCK).min(cols) {
                for (o, r) in t[c * ldt..][r0..r1].iter_mut().zip(r0..r1) {
                    *o = a[r * lda + c];
                }
            }
        }
    }
}

/// [`transpose_ld`] by blocks of 8 rows x 8 columns, each turned in eight
/// registers (AVX2 for the mask's compare). The last block of a band of rows
/// may have fewer columns: it is loaded under a mask and only its columns are
/// stored. The rows past the last 8 go by the scalar kernel. Safety: AVX2, and [`transpose_ld`]'s bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_ld_avx2(a: &[f32], (rows, cols, lda): (usize, usize, usize), t: &mut [f32], ldt: usize) {
    use std::arch::x86_64::*;
    let (rows8, cols8) = (rows - rows % 8, cols - cols % 8);
    let rest = cols - cols8;
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for r0 in (0..rows8).step_by(8) {
        // SAFETY (every block below): rows r0..r0 + 8 of a (columns c0..c0 +
        // 8, or the mask's `rest`) and the columns' rows of t lie within the
        // bounds asserted (r0 + 8 <= rows, c0 + 8 <= cols8, cols8 + rest = cols).
        let (a, t) = unsafe { (a.as_ptr().add(r0 * lda), t.as_mut_ptr().add(r0)) };
        for c0 in (0..cols8).step_by(8) {
            let columns = unsafe { turn8(std::array::from_fn(|i| _mm256_loadu_ps(a.add(i * lda + c0)))) };
            for (k, v) in columns.into_iter().enumerate() {
                unsafe { _mm256_storeu_ps(t.add((c0 + k) * ldt), v) };
            }
        }
        if rest > 0 {
            let columns = unsafe { turn8(std::array::from_fn(|i| _mm256_maskload_ps(a.add(i * lda + cols8), mask))) };
            for (k, v) in columns.into_iter().take(rest).enumerate() {
                unsafe { _mm256_storeu_ps(t.add((cols8 + k) * ldt), v) };
            }
        }
    }
    if rows8 < rows {
        transpose_ld_scalar(&a[rows8 * lda..], (rows - rows8, cols, lda), &mut t[rows8..], ldt);
    }
}

/// Eight rows of 8 -> their eight columns: two rounds of unpacks and
/// shuffles within 128-bit lanes, then the lanes swapped. Safety: AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn turn8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved: p[0] = [r0[0] r1[0] r0[1] r1[1] | r0[4] ..].
    let p: [__m256; 8] = std::array::from_fn(|i| {
        let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 { _mm256_unpacklo_ps(x, y) } else { _mm256_unpackhi_ps(x, y) }
    });
    // q[k] holds column k (and k + 4 in its upper lane) of rows 0..4, q[k + 4]
    // the same of rows 4..8.
    let q: [__m256; 8] = std::array::from_fn(|i| {
        let (half, k) = (i / 4, i % 4);
        let (x, y) = (p[4 * half + k / 2], p[4 * half + k / 2 + 2]);
        if k % 2 == 0 { _mm256_shuffle_ps::<0x44>(x, y) } else { _mm256_shuffle_ps::<0xEE>(x, y) }
    });
    std::array::from_fn(|c| {
        let k = c % 4;
        if c < 4 {
            _mm256_permute2f128_ps::<0x20>(q[k], q[k + 4])
        } else {
            _mm256_permute2f128_ps::<0x31>(q[k], q[k + 4])
        }
    })
}

/// Asks the CPU to start loading `data` into its caches (nothing elsewhere):
/// for rows read next from memory in an order no prefetcher can guess.
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..std::mem::size_of_val(data)).step_by(64) {
        // SAFETY: prefetching is a hint that never faults; the address lies in `data`.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>((data.as_ptr() as *const i8).add(line));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// A byte image's value table (the float each byte value stands for), with
/// its four byte planes: plane k holds byte k of every value, the form in
/// which 64 bytes at a time are looked up by byte permutes.
pub struct ByteTable {
    values: [f32; 256],
    planes: [[u8; 256]; 4],
}

impl ByteTable {
    /// The table of `values[b]` for each byte value b.
    pub fn new(values: [f32; 256]) -> ByteTable {
        let mut planes = [[0u8; 256]; 4];
        for (b, v) in values.iter().enumerate() {
            for (plane, byte) in planes.iter_mut().zip(v.to_le_bytes()) {
                plane[b] = byte;
            }
        }
        ByteTable { values, planes }
    }

    /// `out[i] = values[bytes[i]]`: byte images to floats.
    pub fn look_up(&self, bytes: &[u8], out: &mut [f32]) {
        assert_eq!(bytes.len(), out.len());
        // Whole blocks of 64 by byte permutes where the CPU has VBMI, the rest (all
        // of it without VBMI) by the gather (every VBMI CPU has AVX-512F), else the loop.
        #[cfg(target_arch = "x86_64")]
        {
            let mut done = 0;
            if std::arch::is_x86_feature_detected!("avx512vbmi") && std::arch::is_x86_feature_detected!("avx512bw") {
                done = bytes.len() - bytes.len() % 64;
                // SAFETY: the CPU has AVX-512 VBMI and BW; `done` bytes and values lie in both.
                unsafe { look_up_vbmi(&self.planes, &bytes[..done], &mut out[..done]) };
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F; the lengths are equal (asserted).
                return unsafe { look_up_gather(&self.values, &bytes[done..], &mut out[done..]) };
            }
        }
        look_up_scalar(&self.values, bytes, out);
    }
}

/// Portable reference version of [`ByteTable::look_up`].
pub fn look_up_scalar(table: &[f32; 256], bytes: &[u8], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = table[b as usize];
    }
}

/// [`ByteTable::look_up`] 16 bytes at a time: widened to indices, then one
/// gather from the table (in L1). Safety: AVX-512F, and equal lengths.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn look_up_gather(table: &[f32; 256], bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let whole = bytes.len() - bytes.len() % 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= whole <= both lengths; every index is a byte, below 256.
        unsafe {
            let b = _mm_loadu_si128(bytes.as_ptr().add(i) as *const __m128i);
            let v = _mm512_i32gather_ps::<4>(_mm512_cvtepu8_epi32(b), table.as_ptr());
            _mm512_storeu_ps(out.as_mut_ptr().add(i), v);
        }
    }
    look_up_scalar(table, &bytes[whole..], &mut out[whole..]);
}

/// [`ByteTable::look_up`] 64 bytes at a time, by byte permutes instead of
/// gathers (about 21 cycles for 16 values on a Zen 4 core): each plane's byte
/// of the 64 values is picked from its 256 by two two-register permutes (the
/// lower and upper 128 entries) and bit 7, then the four planes are
/// interleaved into 64 floats. The bytes are first reordered so that the
/// interleaving, which works within 128-bit lanes, writes the floats in
/// order. Safety: AVX-512 VBMI and BW; equal lengths, a multiple of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn look_up_vbmi(planes: &[[u8; 256]; 4], bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(bytes.len() == out.len() && bytes.len().is_multiple_of(64));
    // The interleaving leaves register j's 128-bit lane l holding bytes
    // 16 l + 4 j .. + 4; register j must hold values 16 j .. 16 j + 16.
    let order: [u8; 64] = std::array::from_fn(|i| {
        let (l, j, d) = (i / 16, i % 16 / 4, i % 4);
        (16 * j + 4 * l + d) as u8
    });
    // SAFETY: `order` and each plane hold 64 bytes per load.
    let (order, tables) = unsafe {
        let load = |p: *const u8| _mm512_loadu_si512(p as *const __m512i);
        let tables: [[__m512i; 4]; 4] =
            std::array::from_fn(|k| std::array::from_fn(|q| load(planes[k].as_ptr().add(64 * q))));
        (load(order.as_ptr()), tables)
    };
    for i in (0..bytes.len()).step_by(64) {
        // SAFETY: i + 64 <= both lengths (a multiple of 64).
        unsafe {
            let b = _mm512_permutexvar_epi8(order, _mm512_loadu_si512(bytes.as_ptr().add(i) as *const __m512i));
            let upper = _mm512_movepi8_mask(b);
            let p: [__m512i; 4] = std::array::from_fn(|k| {
                let [t0, t1, t2, t3] = tables[k];
                let lower = _mm512_permutex2var_epi8(t0, b, t1);
                _mm512_mask_blend_epi8(upper, lower, _mm512_permutex2var_epi8(t2, b, t3))
            });
            let (low01, high01) = (_mm512_unpacklo_epi8(p[0], p[1]), _mm512_unpackhi_epi8(p[0], p[1]));
            let (low23, high23) = (_mm512_unpacklo_epi8(p[2], p[3]), _mm512_unpackhi_epi8(p[2], p[3]));
            let floats = [
                _mm512_unpacklo_epi16(low01, low23),
                _mm512_unpackhi_epi16(low01, low23),
                _mm512_unpacklo_epi16(high01, high23),
                _mm512_unpackhi_epi16(high01, high23),
            ];
            for (j, v) in floats.into_iter().enumerate() {
                _mm512_storeu_si512(out.as_mut_ptr().add(i + 16 * j) as *mut __m512i, v);
            }
        }
    }
}

/// Copies each row of `src` (rows of `cols` values) to the start of a row of
/// `width` values in `out`, zeros after it: the padded layouts SIMD kernels read
/// in whole vectors. Stops at whichever runs out first.
pub fn pad_rows(src: &[f32], cols: usize, width: usize, out: &mut [f32]) {
    for (s, d) in src.chunks_exact(cols).zip(out.chunks_exact_mut(width)) {
        d[..cols].copy_from_slice(s);
        d[cols..].fill(0.0);
    }
}

/// Sums the rows of `m` (rows x cols, row-major) into `out` (cols).
pub fn sum_rows(m: &[f32], cols: usize, out: &mut [f32]) {
    out.fill(0.0);
    add_rows(m, cols, out);
}

/// Adds the rows of `m` (rows x cols, row-major) to `out` (cols), in order.
/// Where the columns come in 16s, 16 columns at a time with their sums in a
/// register rather than reloaded for every row (the same sums, bit for bit).
pub fn add_rows(m: &[f32], cols: usize, out: &mut [f32]) {
    if cols.is_multiple_of(16) && out.len() >= cols {
        add_rows_blocked(m, cols, out)
    } else {
        add_rows_reference(m, cols, out)
    }
}

/// Values per chunk of rows that column sums go through a block of columns
/// at a time (16 KiB: the chunk stays in L1 while every block of its columns
/// is summed, so each value is read from memory once whatever the columns).
const CHUNK_VALUES: usize = 4096;

/// Rows per chunk of [`CHUNK_VALUES`] for rows of `cols` values.
pub(crate) fn chunk_rows(cols: usize) -> usize {
    (CHUNK_VALUES / cols.max(1)).max(1)
}

#[multiversion(targets = "simd")]
fn add_rows_blocked(m: &[f32], cols: usize, out: &mut [f32]) {
    let rows = m.len() / cols;
    for chunk in m[..rows * cols].chunks(chunk_rows(cols) * cols) {
        for c0 in (0..cols).step_by(16) {
            let mut sums: [f32; 16] = out[c0..c0 + 16].try_into().unwrap();
            for row in chunk.chunks_exact(cols) {
                let row: &[f32; 16] = row[c0..c0 + 16].try_into().unwrap();
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
            out[c0..c0 + 16].copy_from_slice(&sums);
        }
    }
}

/// [`add_rows`] row by row: the reference of the blocked kernel.
#[multiversion(targets = "simd")]
fn add_rows_reference(m: &[f32], cols: usize, out: &mut [f32]) {
    for row in m.chunks_exact(cols) {
        add_assign(out, row);
    }
}

/// Geometry of a 2-D sliding window (convolution or pooling) over one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Input height, width, channels.
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Window height and width.
    pub kh: usize,
    pub kw: usize,
    /// Strides.
    pub sh: usize,
    pub sw: usize,
    /// Dilation: the window's taps are `dh` rows and `dw` columns apart (1 for pooling).
    pub dh: usize,
    pub dw: usize,
    /// Padding before the first row and column.
    pub pt: usize,
    pub pl: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// Values in one unfolded patch: KH*KW*C.
    pub fn patch_len(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// Output positions per sample: OH*OW.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1 window over `rows` positions of `c` values: the matrix product of
    /// a (rows, C) matrix with a (C, F) kernel, as a convolution.
    pub fn rows(rows: usize, c: usize) -> Window {
        Window { h: rows, w: 1, c, kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0, oh: rows, ow: 1 }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn looking_up_bytes_gives_the_reference_values() {
        let table: [f32; 256] = std::array::from_fn(|b| (b as f64 / 255.0 - 0.13) as f32);
        // Every byte value, at lengths with and without a partial vector (of 64
        // bytes, where the CPU permutes bytes, then of 16).
        for n in [0, 5, 16, 31, 64, 129, 256, 784 + 3] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 97 + 11) as u8).collect();
            let (mut fast, mut reference) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            super::ByteTable::new(table).look_up(&bytes, &mut fast);
            super::look_up_scalar(&table, &bytes, &mut reference);
            assert_eq!(fast, reference, "n={n}");
            assert!(reference.iter().zip(&bytes).all(|(&v, &b)| v == table[b as usize]));
        }
    }

    #[test]
    fn the_transpose_matches_the_reference() {
        // Whole blocks of 8, partial ones in either dimension, and strides
        // wider than the rows on both sides.
        for (rows, cols, lda, ldt) in
            [(8, 8, 8, 8), (16, 10, 10, 16), (5408, 10, 10, 5408), (13, 21, 24, 17), (3, 5, 5, 3)]
        {
            let a: Vec<f32> = (0..rows * lda).map(|i| i as f32 * 0.5 - 7.0).collect();
            let (mut fast, mut reference) = (vec![f32::NAN; cols * ldt], vec![f32::NAN; cols * ldt]);
            super::transpose_ld(&a, (rows, cols, lda), &mut fast, ldt);
            super::transpose_ld_scalar(&a, (rows, cols, lda), &mut reference, ldt);
            let same = fast.iter().zip(&reference).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{rows} x {cols} (lda {lda}, ldt {ldt})");
            assert!((0..rows).all(|r| (0..cols).all(|c| reference[c * ldt + r] == a[r * lda + c])));
        }
    }

    #[test]
    fn blocked_row_sums_match_the_reference_bit_for_bit() {
        for cols in [16, 48] {
            // Rows across several chunks (`chunk_rows`), and a partial one.
            let rows = 2 * super::chunk_rows(16) + 41;
            let m: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0).collect();
            let start: Vec<f32> = (0..cols).map(|i| i as f32 * 0.37).collect();
            let (mut fast, mut plain) = (start.clone(), start);
            super::add_rows_blocked(&m, cols, &mut fast);
            super::add_rows_reference(&m, cols, &mut plain);
            assert_eq!(fast, plain, "{cols} columns");
        }
    }

    #[test]
    fn transposing_matches_the_definition() {
        // Sizes that are not multiples of the block.
        for (rows, cols) in [(37, 45), (1, 17), (16, 1), (32, 48)] {
            let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut t = vec![f32::NAN; rows * cols];
            super::transpose(&a, rows, cols, &mut t);
            for c in 0..cols {
                for r in 0..rows {
                    assert_eq!(t[c * rows + r], a[r * cols + c], "column {c}, row {r} of {rows}x{cols}");
                }
            }
        }
    }

    /// A block of a wider matrix into a block of another: every value of
    /// the block turned, every value outside it untouched.
    #[test]
    fn transposing_between_strided_blocks_touches_only_the_block() {
        let (rows, cols, lda, ldt) = (19, 21, 30, 25);
        let a: Vec<f32> = (0..rows * lda).map(|i| i as f32).collect();
        let mut t = vec![f32::NAN; cols * ldt];
        super::transpose_ld(&a[3..], (rows, cols, lda), &mut t, ldt);
        for c in 0..cols {
            for r in 0..ldt {
                let got = t[c * ldt + r];
                match r < rows {
                    true => assert_eq!(got, a[3 + r * lda + c], "column {c}, row {r}"),
                    false => assert!(got.is_nan(), "({c}, {r}) past the block was written"),
                }
            }
        }
    }
}
