//! Matrix products against a right operand packed once, for inference where
//! the same weights serve call after call: `c = a * b[rows, cols]`, `b` a
//! layer's kernel (K, F) laid out in panels of [`PANEL`] columns, each panel's
//! K rows contiguous ([`pack`]).
//!
//! At batch 1 a convolution's product has few rows (49 positions on a 7x7
//! image) against megabytes of weights, read from memory on every call: a
//! general product packs them first (a pass over them before any
//! multiply-add), where here they stream once, straight from the panels, and
//! the next block is fetched while the current one is multiplied. Two
//! kernels, AVX-512's (10 rows x a panel per block) and AVX2's (6 rows x half
//! a panel); the products' sums are those of [`matmul_packed_reference`], in
//! the same order (fused multiply-adds in all), so both give the same bits.

use super::matmul::MatRef;
use super::{Isa, isa};
use std::ops::Range;

/// Columns of `b` per panel: two AVX-512 vectors, four AVX2 ones.
pub const PANEL: usize = 32;

/// Rows of `b` per block: a block of a panel (32 KiB; 16 KiB of lines for
/// half a panel) stays in L1 while every block of `a`'s rows multiplies it.
const DEPTH: usize = 256;

/// Values of `b` (K, N) packed: `ceil(N / PANEL)` panels of K x [`PANEL`].
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// Whether [`matmul_packed`] beats the general product on this CPU (AVX-512,
/// or AVX2 with FMA); elsewhere callers keep [`super::matmul::matmul`].
pub fn available() -> bool {
    isa().is_some()
}

/// b: (K, N) row-major -> packed: panels of [`PANEL`] columns, each (K, PANEL)
/// row-major; the last panel's columns past N are zero.
pub fn pack(b: &[f32], k: usize, n: usize, packed: &mut [f32]) {
    assert!(b.len() >= k * n && packed.len() >= packed_len(k, n), "packed lengths");
    for (j, panel) in packed[..packed_len(k, n)].chunks_exact_mut(k * PANEL).enumerate() {
        let cols = PANEL.min(n - j * PANEL);
        for (row, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
            dst[..cols].copy_from_slice(&b[row * n + j * PANEL..][..cols]);
            dst[cols..].fill(0.0);
        }
    }
}

/// a: (N, K) row-major -> packed: a^T (K, N) as [`pack`] lays it out, each
/// panel turned from [`PANEL`] rows of `a`.
pub fn pack_transposed(a: &[f32], n: usize, k: usize, packed: &mut [f32]) {
    assert!(a.len() >= n * k && packed.len() >= packed_len(k, n), "packed lengths");
    for (j, panel) in packed[..packed_len(k, n)].chunks_exact_mut(k * PANEL).enumerate() {
        let cols = PANEL.min(n - j * PANEL);
        super::transpose_ld(&a[j * PANEL * k..], (cols, k, k), panel, PANEL);
        panel.chunks_exact_mut(PANEL).for_each(|row| row[cols..].fill(0.0));
    }
}

/// A matrix packed by [`pack`]: `k` rows, `n` columns.
#[derive(Clone, Copy)]
pub struct Packed<'a> {
    data: &'a [f32],
    k: usize,
    n: usize,
}

impl<'a> Packed<'a> {
    pub fn new(data: &'a [f32], k: usize, n: usize) -> Self {
        assert!(data.len() >= packed_len(k, n), "packed matrix out of bounds");
        Packed { data, k, n }
    }

    /// Row `row` of panel `j`: its [`PANEL`] values.
    fn at(&self, j: usize, row: usize) -> &'a [f32] {
        &self.from(j, row)[..PANEL]
    }

    /// The panels' values from row `row` of panel `j` on.
    fn from(&self, j: usize, row: usize) -> &'a [f32] {
        &self.data[(j * self.k + row) * PANEL..]
    }
}

/// A left operand read in place as runs of values: row i's value t is
/// `data[i * ld + (t / len) * stride + t % len]`. A matrix is one run per row;
/// a strided convolution's patches in its padded input are a run of KW*C
/// values per kernel row, `stride` apart (a padded row), positions `ld`
/// apart (SW*C): no unfolding.
#[derive(Clone, Copy)]
pub struct Runs<'a> {
    data: &'a [f32],
    m: usize,
    ld: usize,
    count: usize,
    len: usize,
    stride: usize,
}

impl<'a> Runs<'a> {
    /// `m` rows of `count` runs of `len` values (see [`Runs`]).
    pub fn new(data: &'a [f32], m: usize, ld: usize, (count, len, stride): (usize, usize, usize)) -> Self {
        let last = (m.max(1) - 1) * ld + (count.max(1) - 1) * stride + len;
        assert!(m == 0 || count == 0 || last <= data.len(), "runs out of bounds");
        Runs { data, m, ld, count, len, stride }
    }

    /// Values per row.
    fn k(&self) -> usize {
        self.count * self.len
    }

    /// Where row i's value t lies: the run holding it, and (its offset
    /// in the run, the runs' length, the distance between them). A pointer
    /// only: the caller reads it where `Runs::new` bounded the rows.
    #[cfg(target_arch = "x86_64")]
    fn from(&self, i: usize, t: usize) -> (*const f32, (usize, usize, usize)) {
        let run = self.data.as_ptr().wrapping_add(i * self.ld + t / self.len * self.stride);
        (run, (t % self.len, self.len, self.stride))
    }

    /// Value t of row i.
    fn get(&self, i: usize, t: usize) -> f32 {
        self.data[i * self.ld + t / self.len * self.stride + t % self.len]
    }
}

impl<'a> From<MatRef<'a>> for Runs<'a> {
    /// A matrix read in place: a run per row.
    fn from(a: MatRef<'a>) -> Self {
        assert!(!a.is_transposed(), "a packed product reads a's rows in place");
        let (m, k) = a.dims();
        Runs { data: a.data(), m, ld: a.ld(), count: 1, len: k, stride: 0 }
    }
}

/// Checks the operands of `c = a * b[rows, cols]`; returns the panels.
fn check(a: &Runs, b: &Packed, rows: &Range<usize>, cols: &Range<usize>, c: &[f32], ldc: usize) -> Range<usize> {
    assert_eq!(a.k(), rows.len(), "inner dimensions differ");
    assert!(
        rows.end <= b.k && cols.end <= b.n && cols.start.is_multiple_of(PANEL),
        "rows and columns of the packed matrix"
    );
    let (m, n) = (a.m, cols.len());
    assert!(n <= ldc && (m == 0 || c.len() >= (m - 1) * ldc + n), "output too small");
    cols.start / PANEL..cols.end.div_ceil(PANEL)
}

/// `c = a * b[rows, cols]` (or `c += ...` when `accumulate`): a (m,
/// rows.len()) read in place (a matrix or [`Runs`]), `c` (m, cols.len())
/// with rows `ldc` apart; `cols` starts at a panel.
pub fn matmul_packed<'a>(
    a: impl Into<Runs<'a>>,
    b: Packed,
    rows: Range<usize>,
    cols: Range<usize>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    matmul_packed_with(isa(), a.into(), b, rows, cols, c, ldc, accumulate)
}

/// [`matmul_packed`] with the given instruction set's kernel (the
/// reference where there is none, or the CPU lacks it).
#[allow(clippy::too_many_arguments)]
fn matmul_packed_with(
    isa: Option<Isa>,
    a: Runs,
    b: Packed,
    rows: Range<usize>,
    cols: Range<usize>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = isa.filter(|isa| isa.present()) {
        let panels = check(&a, &b, &rows, &cols, c, ldc);
        let product = Product { a, b, rows, cols, panels, ldc, accumulate };
        // SAFETY: the CPU has the instruction set, and `check` bounded every operand.
        return unsafe {
            match isa {
                Isa::Avx512 => avx512::matmul(&product, c),
                Isa::Avx2 => avx2::matmul(&product, c),
            }
        };
    }
    matmul_packed_reference(a, b, rows, cols, c, ldc, accumulate)
}

/// [`matmul_packed`], plainly: each sum over `rows` in order, by fused multiply-adds.
pub fn matmul_packed_reference<'a>(
    a: impl Into<Runs<'a>>,
    b: Packed,
    rows: Range<usize>,
    cols: Range<usize>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let a = a.into();
    check(&a, &b, &rows, &cols, c, ldc);
    for i in 0..a.m {
        for (o, col) in c[i * ldc..][..cols.len()].iter_mut().zip(cols.clone()) {
            let (j, lane) = (col / PANEL, col % PANEL);
            let start = if accumulate { *o } else { 0.0 };
            *o = rows.clone().enumerate().fold(start, |s, (t, row)| a.get(i, t).mul_add(b.at(j, row)[lane], s));
        }
    }
}

/// The operands of `c = a * b[rows, cols]` (or `c += ...` when
/// `accumulate`) that each kernel takes, checked: `panels` are those of
/// `cols`, c's rows `ldc` apart.
#[cfg(target_arch = "x86_64")]
struct Product<'a> {
    a: Runs<'a>,
    b: Packed<'a>,
    rows: Range<usize>,
    cols: Range<usize>,
    panels: Range<usize>,
    ldc: usize,
    accumulate: bool,
}

/// R rows of a times `depth` rows of a panel (AVX-512) or half a panel
/// (AVX2), into R rows of c: what each kernel runs, `M` its masks of the
/// columns of c present.
#[cfg(target_arch = "x86_64")]
struct Block<M> {
    /// Row 0's run holding the block's first value, and (that value's
    /// offset in it, the runs' length, the distance between them).
    run: *const f32,
    runs: (usize, usize, usize),
    lda: usize,
    /// The block's first row of b: its columns, rows [`PANEL`] apart.
    b: *const f32,
    depth: usize,
    masks: [M; 2],
    /// Whether c holds sums to add to (else they start at zero).
    load: bool,
    /// Where this block's fetches ahead start, and the bytes between them.
    ahead: *const i8,
    step: usize,
}

#[cfg(target_arch = "x86_64")]
impl<M> Block<M> {
    /// The block's values of row 0 of a, piece by piece of its runs: where
    /// each piece starts, and its values' places `t` in the block.
    #[inline(always)]
    fn pieces(&self) -> impl Iterator<Item = (*const f32, Range<usize>)> {
        let ((len, stride), depth) = ((self.runs.1, self.runs.2), self.depth);
        let mut at = (0, self.run, self.runs.0);
        std::iter::from_fn(move || {
            let (t, run, off) = at;
            (t < depth).then(|| {
                // The rest of this run.
                let end = depth.min(t + len - off);
                at = (end, run.wrapping_add(stride), 0);
                (run.wrapping_add(off), t..end)
            })
        })
    }

    /// Asks for this block's share of the next block of b at value `t` (a
    /// prefetch never faults).
    #[inline(always)]
    fn fetch_ahead(&self, t: usize) {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        let ahead = self.ahead.wrapping_add(t * self.step);
        // SAFETY: a prefetch is a hint, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T1>(ahead);
            if self.step > 64 {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Block, DEPTH, PANEL, Product};
    use std::arch::x86_64::*;

    /// Rows of `a` per block: 2 x 10 sums in registers. Ten rows of a, read
    /// in place, stay clear of the 12-way L1's conflicts where `a`'s rows are
    /// 4 KiB apart (1024 or 2048 channels).
    const ROWS: usize = 10;

    /// See [`super::matmul_packed`]: for each panel, blocks of [`DEPTH`] rows
    /// of b, and within one, blocks of [`ROWS`] rows of a.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn matmul(p: &Product, c: &mut [f32]) {
        let Product { a, b, rows, cols, panels, ldc, accumulate } = p;
        let (ldc, accumulate, lda, m) = (*ldc, *accumulate, a.ld, a.m);
        for j in panels.clone() {
            // The panel's columns in c, and the masks of those present.
            let first = j * PANEL - cols.start;
            let width = PANEL.min(cols.end - j * PANEL);
            let masks = [lanes(width.min(16)), lanes(width.saturating_sub(16))];
            for d in (0..rows.len()).step_by(DEPTH) {
                let depth = DEPTH.min(rows.len() - d);
                let bp = b.from(j, rows.start + d).as_ptr();
                let load = accumulate || d > 0;
                // The next block of the panel (or the next panel) is fetched to L2
                // while this one is multiplied, a share by each block of a's rows:
                // spread out, the fetches never wait for a free fill buffer.
                let share = (DEPTH * PANEL * 4).div_ceil(m.div_ceil(ROWS));
                let step = share.div_ceil(depth);
                for i in (0..m).step_by(ROWS) {
                    let ahead = bp.wrapping_add(DEPTH * PANEL) as *const i8;
                    let ahead = ahead.wrapping_add(i / ROWS * share);
                    // SAFETY: rows i.. of a and c, and this block of the panel, lie
                    // inside their slices (`super::check`); the CPU has AVX-512F.
                    unsafe {
                        let (run, runs) = a.from(i, d);
                        let block = Block { run, runs, lda, b: bp, depth, masks, load, ahead, step };
                        let cp = c.as_mut_ptr().add(i * ldc + first);
                        match ROWS.min(m - i) {
                            10 => block.run::<10>(cp, ldc),
                            9 => block.run::<9>(cp, ldc),
                            8 => block.run::<8>(cp, ldc),
                            7 => block.run::<7>(cp, ldc),
                            6 => block.run::<6>(cp, ldc),
                            5 => block.run::<5>(cp, ldc),
                            4 => block.run::<4>(cp, ldc),
                            3 => block.run::<3>(cp, ldc),
                            2 => block.run::<2>(cp, ldc),
                            _ => block.run::<1>(cp, ldc),
                        }
                    }
                }
            }
        }
    }

    /// The first `n` of 16 lanes.
    fn lanes(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    impl Block<__mmask16> {
        // c[r][0..32] (+)= sum over t of a[r][t] * b[t][0..32], r < R
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const R: usize>(&self, c: *mut f32, ldc: usize) {
            // SAFETY: the caller passes R rows of a and c, and `depth` rows of a
            // panel, inside their slices; the CPU has AVX-512F.
            unsafe {
                let [m0, m1] = self.masks;
                let mut lo = [_mm512_setzero_ps(); R];
                let mut hi = [_mm512_setzero_ps(); R];
                if self.load {
                    for r in 0..R {
                        lo[r] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
                        hi[r] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
                    }
                }
                for (a, ts) in self.pieces() {
                    for (u, t) in ts.enumerate() {
                        self.fetch_ahead(t);
                        let b = self.b.add(t * PANEL);
                        let (b0, b1) = (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)));
                        for r in 0..R {
                            let x = _mm512_set1_ps(*a.add(r * self.lda + u));
                            lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
                            hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
                        }
                    }
                }
                for r in 0..R {
                    _mm512_mask_storeu_ps(c.add(r * ldc), m0, lo[r]);
                    _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, hi[r]);
                }
            }
        }
    }
}

/// The product with AVX2 and FMA (16 registers of 8 lanes): a block keeps
/// up to 6 rows of a x half a panel (16 columns) of sums in 12 registers.
/// The depth blocks run outermost, so that a's block of rows (49 x 256
/// values, 50 KiB, at ResNet-50's 7x7 stage) stays in L2 while every panel
/// of b streams past it once: a 512 KiB L2 holds neither a's rows whole nor
/// a panel's.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Block, DEPTH, PANEL, Product};
    use std::arch::x86_64::*;

    /// Most rows of a per block: 6 x 2 sums in registers.
    const ROWS: usize = 6;

    /// See [`super::matmul_packed`]: for each block of [`DEPTH`] rows of b,
    /// each panel, its two halves, and blocks of up to [`ROWS`] rows of a
    /// (as even as they come: 49 rows are 9 blocks of 5 or 6).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul(p: &Product, c: &mut [f32]) {
        let Product { a, b, rows, cols, panels, ldc, accumulate } = p;
        let (ldc, accumulate, lda, m) = (*ldc, *accumulate, a.ld, a.m);
        let blocks = m.div_ceil(ROWS);
        // A block of a panel's rows, and the next one, fetched to L2 while
        // this one is multiplied: a share by each block of rows and half.
        let bytes = DEPTH * PANEL * 4;
        let share = bytes.div_ceil(2 * blocks.max(1));
        for d in (0..rows.len()).step_by(DEPTH) {
            let depth = DEPTH.min(rows.len() - d);
            let load = accumulate || d > 0;
            let step = share.div_ceil(depth);
            for j in panels.clone() {
                let first = j * PANEL - cols.start;
                let width = PANEL.min(cols.end - j * PANEL);
                let bp = b.data.as_ptr().wrapping_add((j * b.k + rows.start + d) * PANEL);
                let next = if j + 1 < panels.end {
                    bp.wrapping_add(b.k * PANEL)
                } else {
                    b.data.as_ptr().wrapping_add((panels.start * b.k + rows.start + d + DEPTH) * PANEL)
                };
                for half in 0..2 {
                    // The half's columns present.
                    let present = width.saturating_sub(half * 16).min(16);
                    if present == 0 {
                        continue;
                    }
                    let masks = [lanes(present.min(8)), lanes(present.saturating_sub(8))];
                    for q in 0..blocks {
                        let (i, end) = (q * m / blocks, (q + 1) * m / blocks);
                        let unit = q * 2 + half;
                        let ahead = (next as *const i8).wrapping_add(unit * share);
                        // SAFETY: rows i..end of a and c, and this block of the
                        // panel, lie inside their slices (`super::check`); the
                        // CPU has AVX2 and FMA.
                        unsafe {
                            let (run, runs) = a.from(i, d);
                            let b = bp.add(half * 16);
                            let block = Block { run, runs, lda, b, depth, masks, load, ahead, step };
                            let cp = c.as_mut_ptr().add(i * ldc + first + half * 16);
                            match end - i {
                                6 => block.run::<6>(cp, ldc),
                                5 => block.run::<5>(cp, ldc),
                                4 => block.run::<4>(cp, ldc),
                                3 => block.run::<3>(cp, ldc),
                                2 => block.run::<2>(cp, ldc),
                                _ => block.run::<1>(cp, ldc),
                            }
                        }
                    }
                }
            }
        }
    }

    /// The first `n` of 8 lanes, and their mask of loads and stores.
    #[target_feature(enable = "avx2")]
    fn lanes(n: usize) -> (usize, __m256i) {
        (n, _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
    }

    /// The first `lanes` values at `c` (masked where fewer than 8: masked
    /// accesses are slow on some CPUs, AMD's Zen 3 among them).
    #[target_feature(enable = "avx2")]
    unsafe fn load(c: *const f32, (lanes, mask): (usize, __m256i)) -> __m256 {
        // SAFETY: the caller's `lanes` values at `c` lie inside c.
        unsafe {
            match lanes {
                8 => _mm256_loadu_ps(c),
                0 => _mm256_setzero_ps(),
                _ => _mm256_maskload_ps(c, mask),
            }
        }
    }

    /// Writes the first `lanes` values of `v` to `c` (see [`load`]).
    #[target_feature(enable = "avx2")]
    unsafe fn store(c: *mut f32, v: __m256, (lanes, mask): (usize, __m256i)) {
        // SAFETY: the caller's `lanes` values at `c` lie inside c.
        unsafe {
            match lanes {
                8 => _mm256_storeu_ps(c, v),
                0 => {}
                _ => _mm256_maskstore_ps(c, mask, v),
            }
        }
    }

    impl Block<(usize, __m256i)> {
        // c[r][0..16] (+)= sum over t of a[r][t] * b[t][0..16], r < R
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<const R: usize>(&self, c: *mut f32, ldc: usize) {
            // SAFETY: the caller passes R rows of a and c, and `depth` rows of
            // half a panel, inside their slices; the CPU has AVX2 and FMA.
            unsafe {
                let [m0, m1] = self.masks;
                let mut lo = [_mm256_setzero_ps(); R];
                let mut hi = [_mm256_setzero_ps(); R];
                if self.load {
                    for r in 0..R {
                        let c = c.add(r * ldc);
                        lo[r] = load(c, m0);
                        hi[r] = load(c.add(8), m1);
                    }
                }
                for (a, ts) in self.pieces() {
                    for (u, t) in ts.enumerate() {
                        self.fetch_ahead(t);
                        let b = self.b.add(t * PANEL);
                        let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
                        for r in 0..R {
                            let x = _mm256_broadcast_ss(&*a.add(r * self.lda + u));
                            lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                            hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
                        }
                    }
                }
                for r in 0..R {
                    let c = c.add(r * ldc);
                    store(c, lo[r], m0);
                    store(c.add(8), hi[r], m1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::matmul_ld;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104729) % 1999) as f32 / 1999.0) - 0.5).collect()
    }

    #[test]
    fn packing_keeps_every_value_and_zeroes_the_rest() {
        let (k, n) = (5, 37);
        let b = values(k * n, 1);
        let mut packed = vec![f32::NAN; packed_len(k, n)];
        pack(&b, k, n, &mut packed);
        let p = Packed::new(&packed, k, n);
        for row in 0..k {
            for col in 0..64 {
                let want = if col < n { b[row * n + col] } else { 0.0 };
                assert_eq!(p.at(col / PANEL, row)[col % PANEL], want, "row {row} column {col}");
            }
        }
    }

    #[test]
    fn packing_a_transpose_packs_the_transposed_matrix() {
        let (n, k) = (37, 5);
        let a = values(n * k, 7);
        let mut t = vec![0.0; k * n];
        crate::kernels::transpose(&a, n, k, &mut t);
        let (mut want, mut got) = (vec![f32::NAN; packed_len(k, n)], vec![f32::NAN; packed_len(k, n)]);
        pack(&t, k, n, &mut want);
        pack_transposed(&a, n, k, &mut got);
        assert_eq!(got, want);
    }

    /// A strided convolution's patches read in place as runs (a run of KW*C
    /// values per kernel row, from input rows padded by `pad_rows`): each
    /// instruction set's kernel equals the reference bit for bit, and the
    /// reference equals the product over the unfolded patches up to rounding. 7x7 windows at
    /// stride 2 over 3 channels (the runs' length below a depth block, a
    /// partial panel), 1x1 windows at stride 2 over 300 channels (one run
    /// across depth blocks), 3x3 windows at stride (2, 3) over 100 channels
    /// (runs across depth blocks, the block ending inside a run).
    #[test]
    fn runs_read_a_strided_convolutions_patches_in_place() {
        use super::super::Window;
        use super::super::im2col::{im2col, pad_rows, padded_width};
        for (h, w, c, k, (sh, sw), pad, f) in
            [(15, 14, 3, 7, (2, 2), 3, 40), (8, 9, 300, 1, (2, 2), 0, 64), (9, 10, 100, 3, (2, 3), 1, 32)]
        {
            let (oh, ow) = ((h + 2 * pad - k) / sh + 1, (w + 2 * pad - k) / sw + 1);
            let g = Window { h, w, c, kh: k, kw: k, sh, sw, dh: 1, dw: 1, pt: pad, pl: pad, oh, ow };
            let x = values(h * w * c, 5);
            let (wp, reads) = (padded_width(&g), (oh - 1) * sh + k);
            let mut xp = vec![f32::NAN; reads * wp * c];
            pad_rows(&g, &x, 0..reads, &mut xp);
            let kernel = values(g.patch_len() * f, 6);
            let mut packed = vec![0.0; packed_len(g.patch_len(), f)];
            pack(&kernel, g.patch_len(), f, &mut packed);
            let p = Packed::new(&packed, g.patch_len(), f);
            let mut cols = vec![0.0; g.positions() * g.patch_len()];
            im2col(&g, &x, &mut cols);
            let mut unfolded = vec![0.0; g.positions() * f];
            matmul_ld(
                MatRef::new(&cols, g.positions(), g.patch_len()),
                MatRef::new(&kernel, g.patch_len(), f),
                &mut unfolded,
                f,
                false,
            );
            for oy in 0..oh {
                let runs = Runs::new(&xp[oy * sh * wp * c..], ow, sw * c, (k, k * c, wp * c));
                let mut want = vec![0.0; ow * f];
                matmul_packed_reference(runs, p, 0..g.patch_len(), 0..f, &mut want, f, false);
                for (i, (a, b)) in want.iter().zip(&unfolded[oy * ow * f..]).enumerate() {
                    assert!((a - b).abs() < 1e-4, "{k}x{k} over {c}, row {oy}, value {i}: {a} against {b}");
                }
                for isa in Isa::present_sets() {
                    let mut got = vec![0.0; ow * f];
                    matmul_packed_with(Some(isa), runs, p, 0..g.patch_len(), 0..f, &mut got, f, false);
                    assert_eq!(got, want, "{isa:?}: {k}x{k} windows over {c} channels, output row {oy}");
                }
            }
        }
    }

    /// Each instruction set's kernel equals the reference bit for bit, and
    /// the reference equals the general product up to rounding: row blocks
    /// of 1 to 10 and past (AVX2: uneven blocks of up to 6),
    /// depths across a block of [`DEPTH`], partial panels, row and column
    /// ranges of b, rows of a read in place at a stride, accumulation.
    #[test]
    fn packed_products_match_the_reference_and_the_general_product() {
        for (m, k, n, rows, cols, accumulate) in [
            (1, 3, 32, 0..3, 0..32, false),
            (7, 300, 70, 0..300, 0..70, false),
            (23, 600, 96, 40..560, 32..96, true),
            (10, 17, 20, 0..17, 0..20, true),
            (49, 64, 160, 0..64, 64..144, false),
            (13, 700, 75, 0..700, 0..75, false),
            (5, 40, 59, 0..40, 32..59, true),
            (49, 530, 84, 0..530, 0..84, false),
        ] {
            let (depth, width) = (rows.len(), cols.len());
            let lda = depth + 3;
            let a = values(m * lda, 2);
            let b = values(k * n, 3);
            let mut packed = vec![0.0; packed_len(k, n)];
            pack(&b, k, n, &mut packed);
            let p = Packed::new(&packed, k, n);
            let ldc = width + 5;
            let start = values(m * ldc, 4);
            let (mut want, mut general) = (start.clone(), start.clone());
            let am = MatRef::with_ld(&a, m, depth, lda);
            matmul_packed_reference(am, p, rows.clone(), cols.clone(), &mut want, ldc, accumulate);
            for isa in Isa::present_sets() {
                let mut got = start.clone();
                matmul_packed_with(Some(isa), am.into(), p, rows.clone(), cols.clone(), &mut got, ldc, accumulate);
                assert_eq!(got, want, "{isa:?}: m {m} k {k} n {n}");
            }
            let bm = MatRef::with_ld(&b[rows.start * n + cols.start..], depth, width, n);
            matmul_ld(am, bm, &mut general, ldc, accumulate);
            for i in 0..m {
                for j in 0..ldc {
                    let (x, y) = (want[i * ldc + j], general[i * ldc + j]);
                    if j < width {
                        assert!((x - y).abs() < 1e-4, "m {m} k {k} n {n}: ({i}, {j}) {x} against {y}");
                    } else {
                        assert_eq!(x, start[i * ldc + j], "a value past the columns was written");
                    }
                }
            }
        }
    }
}
