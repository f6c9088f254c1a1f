//! Single-threaded f32 matrix products on strided slices (the `gemm` crate), shared by the
//! im2col and Winograd convolutions. The callers parallelise over image groups.

/// A read-only matrix in a slice: element (r, c) at `r·row_stride + c·column_stride`.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Matrix<'a> {
    /// Row-major with rows `stride` apart.
    pub fn rows(data: &'a [f32], stride: usize) -> Self {
        Self { data, row_stride: stride, column_stride: 1 }
    }

    /// The transpose of a row-major matrix whose rows are `stride` apart.
    pub fn columns(data: &'a [f32], stride: usize) -> Self {
        Self { data, row_stride: 1, column_stride: stride }
    }

    fn fits(&self, rows: usize, columns: usize) -> bool {
        fits(self.data.len(), [self.row_stride, self.column_stride], rows, columns)
    }
}

/// Whether a `rows × columns` matrix with these strides lies inside `len` elements.
fn fits(len: usize, [row_stride, column_stride]: [usize; 2], rows: usize, columns: usize) -> bool {
    rows == 0 || columns == 0 || (rows - 1) * row_stride + (columns - 1) * column_stride < len
}

/// dst `[m, n]` = lhs `[m, k]` · rhs `[k, n]` (or dst += …, when `accumulate`), where dst's
/// element (r, c) is at `r·dst_strides[0] + c·dst_strides[1]` (so `[n, 1]` is row-major,
/// `[1, m]` column-major).
pub fn matmul(dst: &mut [f32], dst_strides: [usize; 2], lhs: Matrix, rhs: Matrix, [m, n, k]: [usize; 3], accumulate: bool) {
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "matmul: operand out of bounds");
    assert!(fits(dst.len(), dst_strides, m, n), "matmul: destination out of bounds");
    // SAFETY: the asserts above keep every element the product reads or writes inside its slice;
    // `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides[1] as isize,
            dst_strides[0] as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
