//! Matrix products through the `gemm` crate's f32 kernels (AVX2 or AVX-512 picked at run time).
//! Always single-threaded: callers parallelise over the batch themselves, which
//! is faster for the skinny shapes of small CNNs and keeps results deterministic.

/// A row-major matrix operand: `rows x cols` with a leading dimension (distance
/// between rows), optionally read transposed.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    ld: usize,
    transposed: bool,
}

impl<'a> MatRef<'a> {
    /// `data` holds a `rows x cols` row-major matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::with_ld(data, rows, cols, cols)
    }

    /// Like [`MatRef::new`] with rows `ld` values apart (a column block of a wider matrix).
    pub fn with_ld(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        assert!(cols <= ld && (rows == 0 || (rows - 1) * ld + cols <= data.len()), "matrix out of bounds");
        MatRef { data, rows, cols, ld, transposed: false }
    }

    /// `rows x cols` whose rows start `step` values apart, `step` possibly
    /// below `cols`: consecutive rows then overlap (the patches of a
    /// convolution's neighbouring positions, read in place).
    pub fn overlapping(data: &'a [f32], rows: usize, cols: usize, step: usize) -> Self {
        assert!(rows == 0 || (rows - 1) * step + cols <= data.len(), "matrix out of bounds");
        MatRef { data, rows, cols, ld: step, transposed: false }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef { transposed: !self.transposed, ..self }
    }

    /// (rows, cols) as used in the product.
    pub(super) fn dims(&self) -> (usize, usize) {
        if self.transposed { (self.cols, self.rows) } else { (self.rows, self.cols) }
    }

    pub(super) fn is_transposed(&self) -> bool {
        self.transposed
    }

    /// The values (as stored).
    pub(super) fn data(&self) -> &'a [f32] {
        self.data
    }

    /// The distance between rows (as stored).
    pub(super) fn ld(&self) -> usize {
        self.ld
    }

    /// (row stride, column stride) as used in the product.
    fn strides(&self) -> (isize, isize) {
        if self.transposed { (1, self.ld as isize) } else { (self.ld as isize, 1) }
    }
}

/// `c = a * b` (or `c += a * b` when `accumulate`), `c` row-major `m x n`.
pub fn matmul(a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool) {
    let n = b.dims().1;
    matmul_ld(a, b, c, n, accumulate)
}

/// [`matmul`] into a column block of a wider matrix: `c`'s rows are `ldc` values apart.
pub fn matmul_ld(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (m, k) = a.dims();
    let (kb, n) = b.dims();
    assert_eq!(k, kb, "inner dimensions differ");
    assert!(n <= ldc && (m == 0 || c.len() >= (m - 1) * ldc + n), "output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // The kernels want a column-major destination: compute c^T = b^T a^T, which
    // is row-major c seen column-major (as the `gemm` crate's front end does).
    // SAFETY: MatRef::with_ld (or ::overlapping) checked every operand lies inside its slice, `c` was
    // checked above, and `c` is a unique borrow so it cannot alias `a` or `b`.
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            n,
            m,
            k,
            c.as_mut_ptr(),
            ldc as isize,
            1,
            accumulate,
            b.data.as_ptr(),
            b_rs,
            b_cs,
            a.data.as_ptr(),
            a_rs,
            a_cs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_common::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn products_and_transposes_match_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut c, false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // (a^T)^T b via a stored transposed copy.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut c2 = vec![1.0; m * n];
        matmul(MatRef::new(&at, k, m).t(), MatRef::new(&b, k, n), &mut c2, true);
        for (x, y) in c2.iter().zip(&want) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
        // Into columns 2..2+n of a wider matrix, the others untouched.
        let ldc = n + 4;
        let mut wide = vec![9.0; m * ldc];
        matmul_ld(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut wide[2..], ldc, false);
        for i in 0..m {
            for j in 0..ldc {
                let got = wide[i * ldc + j];
                if (2..2 + n).contains(&j) {
                    assert!((got - want[i * n + j - 2]).abs() < 1e-5);
                } else {
                    assert_eq!(got, 9.0);
                }
            }
        }
    }
}
