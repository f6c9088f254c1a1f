//! Stride-1 3×3 convolution by Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016), forward and backward, on
//! contiguous f32 NCHW buffers. The output is cut into m×m tiles; tile t of channel c reads an
//! α×α input window d (α = m + 2) and
//!
//! - forward: Y = Aᵀ [Σ_c U_c ⊙ V_c] A with U = G w Gᵀ (per weight) and V = Bᵀ d B (per tile):
//!   for each of the α² transformed positions e, M_e `[tiles, c_out]` = V_e `[tiles, c_in]` ·
//!   U_eᵀ `[c_in, c_out]`, one matrix product, with m²·9/α² as many multiplications as the
//!   direct sum;
//! - backward: every step above is linear, so the gradients are its transposes: dM = A dY Aᵀ,
//!   dV_e = dM_e · U_e, dd = B dV Bᵀ (added onto the overlapping input windows),
//!   dU_e = dM_eᵀ · V_e (summed over tiles), dw = Gᵀ dU G.
//!
//! The gradients are exact for the computed forward, and equal the convolution's up to rounding.
//! Images are processed in groups sized from the shape alone (about [`GROUP_TILES`] tiles),
//! never from the thread count, so results do not depend on the machine; within a group, each
//! step runs in parallel over channels or transformed positions. The transforms' loops run over
//! all tiles of a group at once, compiled for the CPU's widest vectors ([`vectorized`]).

use rayon::prelude::*;

use super::kernel::Geometry;
use super::matmul::{matmul, Matrix};
use crate::cpu::{vectorized, Vectorized};

/// Output tile size m and transformed tile size α = m + 2 of the variant in use.
const M: usize = 4;
const A: usize = M + 2;

/// The transforms of F(4×4, 3×3) with interpolation points 0, ±1, ±2 (Lavin & Gray, §4.2).
const TRANSFORMS: Transforms<M, A> = Transforms {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

/// Target number of tiles per group of images: wide enough for efficient matrix products
/// (the weight gradient sums over a group's tiles), small enough that a group's transformed
/// tiles stay within a few megabytes.
const GROUP_TILES: usize = 512;

/// Output channels per parallel task of the forward's products, input channels per task of
/// the input gradient's.
const CHANNEL_BLOCK: usize = 16;

/// The three matrices of F(m×m, 3×3).
struct Transforms<const M: usize, const A: usize> {
    /// Bᵀ `[α, α]`: input window d → V = Bᵀ d B.
    bt: [[f32; A]; A],
    /// G `[α, 3]`: kernel w → U = G w Gᵀ.
    g: [[f32; 3]; A],
    /// Aᵀ `[m, α]`: transformed product → output tile Aᵀ M A.
    at: [[f32; A]; M],
}

/// A linear map of I values to O, as a type, so that its coefficients are constants where it
/// is applied and multiplications by 0 and 1 cost nothing.
trait Linear<const I: usize, const O: usize>: Copy {
    /// `[O, I]`: output o = Σ_i L[o][i] · input i.
    const L: [[f32; I]; O];
}

/// Bᵀ: the input transform.
#[derive(Clone, Copy)]
struct InputTransform;
/// B: the input gradient's.
#[derive(Clone, Copy)]
struct InputGradient;
/// Aᵀ: the output transform.
#[derive(Clone, Copy)]
struct OutputTransform;
/// A: the output gradient's.
#[derive(Clone, Copy)]
struct OutputGradient;
/// G: the kernel transform.
#[derive(Clone, Copy)]
struct KernelTransform;
/// Gᵀ: the kernel gradient's.
#[derive(Clone, Copy)]
struct KernelGradient;

impl Linear<A, A> for InputTransform {
    const L: [[f32; A]; A] = TRANSFORMS.bt;
}
impl Linear<A, A> for InputGradient {
    const L: [[f32; A]; A] = transpose(&TRANSFORMS.bt);
}
impl Linear<A, M> for OutputTransform {
    const L: [[f32; A]; M] = TRANSFORMS.at;
}
impl Linear<M, A> for OutputGradient {
    const L: [[f32; M]; A] = transpose(&TRANSFORMS.at);
}
impl Linear<3, A> for KernelTransform {
    const L: [[f32; 3]; A] = TRANSFORMS.g;
}
impl Linear<A, 3> for KernelGradient {
    const L: [[f32; A]; 3] = transpose(&TRANSFORMS.g);
}

/// `[rows, columns]` → `[columns, rows]`.
const fn transpose<const R: usize, const C: usize>(m: &[[f32; C]; R]) -> [[f32; R]; C] {
    let mut t = [[0.0; R]; C];
    let mut r = 0;
    while r < R {
        let mut c = 0;
        while c < C {
            t[c][r] = m[r][c];
            c += 1;
        }
        r += 1;
    }
    t
}

/// Whether [`forward`] and [`backward`] can compute this convolution: 3×3, stride 1, no
/// dilation.
pub fn applies(g: &Geometry) -> bool {
    g.kernel == [3, 3] && g.stride == [1, 1] && g.dilation == [1, 1]
}

/// Whether [`forward`] is faster than im2col here: with at least 64 input channels and 16×16
/// outputs. On smaller planes the weight transform and the few tiles per image cost more than
/// the multiplications saved (ResNet-18's 256-channel layers at 8×8: 0.90× im2col's speed, the
/// 512-channel ones at 4×4: 0.67×; at 32×32 and 16×16: 1.38× and 1.12×; Intel Xeon,
/// bench/results/step-intel.md).
pub fn pays_forward(g: &Geometry) -> bool {
    applies(g) && g.in_channels >= 64 && g.out_size[0] * g.out_size[1] >= 256
}

/// Whether [`backward`] is faster than im2col here: with at least 16 input channels (1.16-1.64×
/// on every such layer of ResNet-18 and the small network; with 3, the first layer's, 0.4-0.5×).
/// The gradients are then those of the Winograd forward even where the forward ran im2col:
/// the two forwards differ by rounding only.
pub fn pays_backward(g: &Geometry) -> bool {
    applies(g) && g.in_channels >= 16
}

/// Tile rows and columns per image.
fn tiles(g: &Geometry) -> [usize; 2] {
    g.out_size.map(|size| size.div_ceil(M))
}

/// Images per group.
fn group(g: &Geometry) -> usize {
    let [rows, columns] = tiles(g);
    GROUP_TILES.div_ceil((rows * columns).max(1)).clamp(1, g.batch.max(1))
}

/// The α×α input windows of a group of `images`.
fn input_windows(g: &Geometry, images: usize) -> Windows<A> {
    Windows { size: g.in_size, offset: g.padding, tiles: tiles(g), images }
}

/// The m×m output tiles of a group of `images`.
fn output_windows(g: &Geometry, images: usize) -> Windows<M> {
    Windows { size: g.out_size, offset: [0, 0], tiles: tiles(g), images }
}

/// The convolution of `x` (`[batch, c_in, h, w]`) with `weight` (`[c_out, c_in, 3, 3]`).
pub fn forward(x: &[f32], weight: &[f32], g: Geometry) -> Vec<f32> {
    debug_assert!(applies(&g));
    let u = transform_weight(weight, &g);
    let (in_plane, out_plane) = (g.in_size[0] * g.in_size[1], g.out_size[0] * g.out_size[1]);
    let (image_in, image_out) = (g.in_channels * in_plane, g.out_channels * out_plane);
    let mut out = vec![0f32; g.batch * image_out];
    // V and M, allocated for the first (largest) group and reused: every element is written
    // before it is read.
    let (mut v, mut m) = (Vec::new(), Vec::new());
    for (out, x) in out.chunks_mut(group(&g) * image_out).zip(x.chunks(group(&g) * image_in)) {
        let images = out.len() / image_out;
        let width = output_windows(&g, images).width();
        let channel_block = A * A * width;
        transform_input(x, &g, images, &mut v);
        // M `[c_out, α², width]`: M_e [width, c_out] = V_e [width, c_in] · U_eᵀ [c_in, c_out]
        m.resize(g.out_channels * channel_block, 0.0);
        m.par_chunks_mut(CHANNEL_BLOCK * channel_block).enumerate().for_each(|(block, m)| {
            let (first, outputs) = (block * CHANNEL_BLOCK, m.len() / channel_block);
            for e in 0..A * A {
                let u = &u[(e * g.out_channels + first) * g.in_channels..];
                let (lhs, rhs) = (Matrix::columns(&v[e * width..], channel_block), Matrix::columns(u, g.in_channels));
                matmul(&mut m[e * width..], [1, channel_block], lhs, rhs, [width, outputs, g.in_channels], false);
            }
        });
        planes_by_channel_mut(out, g.out_channels, out_plane).into_par_iter().zip(m.par_chunks(channel_block)).for_each_init(Scratch::default, |scratch, (mut planes, m)| {
            vectorized(Scatter { l: OutputTransform, transformed: m, planes: &mut planes, at: output_windows(&g, images), scratch })
        });
    }
    out
}

/// Gradients of [`forward`] for the weight and, when `input_grad`, for the input, given the
/// output gradient `dy`.
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], g: Geometry, input_grad: bool) -> (Option<Vec<f32>>, Vec<f32>) {
    debug_assert!(applies(&g));
    let u = transform_weight(weight, &g);
    let (in_plane, out_plane) = (g.in_size[0] * g.in_size[1], g.out_size[0] * g.out_size[1]);
    let (image_in, image_out) = (g.in_channels * in_plane, g.out_channels * out_plane);
    let mut x_grad = if input_grad { vec![0f32; x.len()] } else { Vec::new() };
    // dU `[α², c_out, c_in]`, summed over the groups in order
    let mut du = vec![0f32; A * A * g.out_channels * g.in_channels];
    let (mut v, mut dm) = (Vec::new(), Vec::new());
    let group_len = group(&g) * image_in;
    let mut x_grads = x_grad.chunks_mut(group_len);
    for (x, dy) in x.chunks(group_len).zip(dy.chunks(group(&g) * image_out)) {
        let images = x.len() / image_in;
        let width = output_windows(&g, images).width();
        let channel_block = A * A * width;
        // dM = A dY Aᵀ: `[c_out, α², width]`
        dm.resize(g.out_channels * channel_block, 0.0);
        dm.par_chunks_mut(channel_block).zip(planes_by_channel(dy, g.out_channels, out_plane)).for_each_init(Scratch::default, |scratch, (dm, planes)| {
            vectorized(Gather { l: OutputGradient, planes: &planes, at: output_windows(&g, images), out: dm, scratch })
        });
        transform_input(x, &g, images, &mut v);
        du.par_chunks_mut(g.out_channels * g.in_channels).enumerate().for_each(|(e, du)| {
            // dU_e [c_out, c_in] += dM_eᵀ [c_out, width] · V_e [width, c_in]
            let (lhs, rhs) = (Matrix::rows(&dm[e * width..], channel_block), Matrix::columns(&v[e * width..], channel_block));
            matmul(du, [g.in_channels, 1], lhs, rhs, [g.out_channels, g.in_channels, width], true);
        });
        let Some(x_grad) = x_grads.next() else { continue };
        // dV `[c_in, α², width]`, over V: dV_e [width, c_in] = dM_e [width, c_out] · U_e [c_out, c_in]
        v.par_chunks_mut(CHANNEL_BLOCK * channel_block).enumerate().for_each(|(block, dv)| {
            let (first, inputs) = (block * CHANNEL_BLOCK, dv.len() / channel_block);
            for e in 0..A * A {
                let u = &u[e * g.out_channels * g.in_channels + first..];
                let (lhs, rhs) = (Matrix::columns(&dm[e * width..], channel_block), Matrix::rows(u, g.in_channels));
                matmul(&mut dv[e * width..], [1, channel_block], lhs, rhs, [width, inputs, g.out_channels], false);
            }
        });
        planes_by_channel_mut(x_grad, g.in_channels, in_plane).into_par_iter().zip(v.par_chunks(channel_block)).for_each_init(Scratch::default, |scratch, (mut planes, dv)| {
            vectorized(Scatter { l: InputGradient, transformed: dv, planes: &mut planes, at: input_windows(&g, images), scratch })
        });
    }
    (input_grad.then_some(x_grad), weight_grad_from(&du, &g))
}

/// V `[c_in, α², width]` of a group of `images` images `x`, into `v` (resized).
fn transform_input(x: &[f32], g: &Geometry, images: usize, v: &mut Vec<f32>) {
    let at = input_windows(g, images);
    v.resize(g.in_channels * A * A * at.width(), 0.0);
    v.par_chunks_mut(A * A * at.width()).zip(planes_by_channel(x, g.in_channels, g.in_size[0] * g.in_size[1])).for_each_init(Scratch::default, |scratch, (v, planes)| {
        vectorized(Gather { l: InputTransform, planes: &planes, at, out: v, scratch })
    });
}

/// The planes of contiguous NCHW images, by channel: `[channel][image]`.
fn planes_by_channel(images: &[f32], channels: usize, plane: usize) -> Vec<Vec<&[f32]>> {
    let mut by_channel = vec![Vec::new(); channels];
    for (index, plane) in images.chunks(plane).enumerate() {
        by_channel[index % channels].push(plane);
    }
    by_channel
}

/// [`planes_by_channel`], writable.
fn planes_by_channel_mut(images: &mut [f32], channels: usize, plane: usize) -> Vec<Vec<&mut [f32]>> {
    let mut by_channel: Vec<Vec<&mut [f32]>> = (0..channels).map(|_| Vec::new()).collect();
    for (index, plane) in images.chunks_mut(plane).enumerate() {
        by_channel[index % channels].push(plane);
    }
    by_channel
}

/// U `[α², c_out, c_in]` = G w Gᵀ for every (output, input) channel pair, as two 1-D
/// transforms over whole rows of pairs.
fn transform_weight(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let pairs = g.out_channels * g.in_channels;
    // w as [q][p][pairs] (kernel column, row), so that each 1-D transform reads whole rows.
    let mut taps = vec![0f32; 9 * pairs];
    for (pair, w) in weight.chunks(9).enumerate() {
        for (tap, value) in w.iter().enumerate() {
            taps[(tap % 3 * 3 + tap / 3) * pairs + pair] = *value;
        }
    }
    // columns[q][ξ] = Σ_p G[ξ][p] · w[p][q]
    let mut columns = vec![0f32; 3 * A * pairs];
    columns.par_chunks_mut(A * pairs).zip(taps.par_chunks(3 * pairs)).for_each(|(columns, w)| {
        vectorized(Combine { l: KernelTransform, inputs: rows(w, pairs), outputs: rows_mut(columns, pairs), accumulate: false })
    });
    // U[ξ][ν] = Σ_q G[ν][q] · columns[q][ξ]
    let mut u = vec![0f32; A * A * pairs];
    u.par_chunks_mut(A * pairs).enumerate().for_each(|(xi, u)| {
        let inputs = std::array::from_fn(|q| &columns[(q * A + xi) * pairs..][..pairs]);
        vectorized(Combine { l: KernelTransform, inputs, outputs: rows_mut(u, pairs), accumulate: false })
    });
    u
}

/// dw `[c_out, c_in, 3, 3]` = Gᵀ dU G, the transpose of [`transform_weight`].
fn weight_grad_from(du: &[f32], g: &Geometry) -> Vec<f32> {
    let pairs = g.out_channels * g.in_channels;
    // rows[ξ][q] = Σ_ν G[ν][q] · dU[ξ][ν]
    let mut rows_ = vec![0f32; A * 3 * pairs];
    rows_.par_chunks_mut(3 * pairs).zip(du.par_chunks(A * pairs)).for_each(|(rows_, du)| {
        vectorized(Combine { l: KernelGradient, inputs: rows(du, pairs), outputs: rows_mut(rows_, pairs), accumulate: false })
    });
    // taps[q][p] = Σ_ξ G[ξ][p] · rows[ξ][q]
    let mut taps = vec![0f32; 9 * pairs];
    taps.par_chunks_mut(3 * pairs).enumerate().for_each(|(q, taps)| {
        let inputs = std::array::from_fn(|xi| &rows_[(xi * 3 + q) * pairs..][..pairs]);
        vectorized(Combine { l: KernelGradient, inputs, outputs: rows_mut(taps, pairs), accumulate: false })
    });
    let mut w_grad = vec![0f32; pairs * 9];
    for (pair, dw) in w_grad.chunks_mut(9).enumerate() {
        for (tap, value) in dw.iter_mut().enumerate() {
            *value = taps[(tap % 3 * 3 + tap / 3) * pairs + pair];
        }
    }
    w_grad
}

/// The first N rows (`len` long) of `data`.
fn rows<const N: usize>(data: &[f32], len: usize) -> [&[f32]; N] {
    std::array::from_fn(|i| &data[i * len..][..len])
}

/// The first N rows (`len` long) of `data`, writable.
fn rows_mut<const N: usize>(data: &mut [f32], len: usize) -> [&mut [f32]; N] {
    let mut chunks = data.chunks_mut(len);
    std::array::from_fn(|_| chunks.next().expect("N rows"))
}

/// Where the R×R windows of a group's tiles lie, for one channel: tile (ty, tx) of each image's
/// plane (`size`) has its window's corner at (m·ty − offset, m·tx − offset), zero outside the
/// plane. Tiles are numbered t = (ty, tx, image) in that order.
#[derive(Clone, Copy)]
struct Windows<const R: usize> {
    size: [usize; 2],
    offset: [usize; 2],
    tiles: [usize; 2],
    images: usize,
}

impl<const R: usize> Windows<R> {
    /// Tiles in the group.
    #[inline(always)]
    fn width(&self) -> usize {
        self.tiles[0] * self.tiles[1] * self.images
    }

    /// Padded columns m·j + q per phase q (see [`Windows::phase`]).
    #[inline(always)]
    fn phase_len(&self) -> usize {
        self.tiles[1] + 1
    }

    #[inline(always)]
    fn row_len(&self) -> usize {
        M * self.phase_len() * self.images
    }

    #[inline(always)]
    fn padded_rows(&self) -> usize {
        (self.tiles[0] - 1) * M + R
    }

    /// The planes, zero-padded to cover every window, interleaved: padded row y, column
    /// m·j + q of image i at `[y][q][j][i]`, so that element (r, s) of the windows of a row of
    /// tiles (all tx, all images) is one contiguous run ([`Windows::run`]).
    fn phase(&self, planes: &[&[f32]], phased: &mut Vec<f32>) {
        phased.clear();
        phased.resize(self.padded_rows() * self.row_len(), 0.0);
        for (y, padded) in self.rows() {
            let row = &mut phased[padded * self.row_len()..][..self.row_len()];
            for (x, column) in self.columns() {
                let source = y * self.size[1] + x;
                for (target, plane) in row[column..column + self.images].iter_mut().zip(planes) {
                    *target = plane[source];
                }
            }
        }
    }

    /// The transpose of [`Windows::phase`]: adds the inside part of `phased` onto the planes.
    fn add_unphased(&self, phased: &[f32], planes: &mut [&mut [f32]]) {
        // Image by image: the planes lie a whole image apart, and writing them all at once
        // makes their cache lines evict each other.
        for (image, plane) in planes.iter_mut().enumerate() {
            for (y, padded) in self.rows() {
                let row = &phased[padded * self.row_len() + image..][..self.row_len() - image];
                for (x, column) in self.columns() {
                    plane[y * self.size[1] + x] += row[column];
                }
            }
        }
    }

    /// The plane rows y that some window reads, with their padded rows.
    #[inline(always)]
    fn rows(&self) -> impl Iterator<Item = (usize, usize)> {
        let (rows, offset) = (self.padded_rows().saturating_sub(self.offset[0]).min(self.size[0]), self.offset[0]);
        (0..rows).map(move |y| (y, y + offset))
    }

    /// The plane columns x that some window reads, with where image 0's value lies in a phased
    /// row: padded column x + offset = m·j + q at `(q·phase_len + j)·images`.
    #[inline(always)]
    fn columns(&self) -> impl Iterator<Item = (usize, usize)> {
        let columns = (M * self.phase_len()).saturating_sub(self.offset[1]).min(self.size[1]);
        let (offset, phase_len, images) = (self.offset[1], self.phase_len(), self.images);
        (0..columns).map(move |x| {
            let padded = x + offset;
            (x, ((padded % M) * phase_len + padded / M) * images)
        })
    }

    /// Where element (r, s) of the windows of tile row `ty` lies in the phased planes.
    #[inline(always)]
    fn run(&self, r: usize, s: usize, ty: usize) -> std::ops::Range<usize> {
        let start = (ty * M + r) * self.row_len() + ((s % M) * self.phase_len() + s / M) * self.images;
        start..start + self.tiles[1] * self.images
    }

    /// The tiles of tile row `ty`.
    #[inline(always)]
    fn row_of_tiles(&self, ty: usize) -> std::ops::Range<usize> {
        let len = self.tiles[1] * self.images;
        ty * len..(ty + 1) * len
    }
}

/// Buffers of one task of [`Gather`] or [`Scatter`], reused across channels.
#[derive(Default)]
struct Scratch {
    phased: Vec<f32>,
    mixed: Vec<f32>,
}

/// For every tile t of a group's `planes` (one channel): its window d, transformed to
/// L d Lᵀ `[α, α]`; element (a, b) goes to `out[(a·α + b)·width + t]`. With L = Bᵀ (R = α)
/// this is the input transform; with L = A (R = m, no offset) the output gradient's. Run it
/// through [`vectorized`].
struct Gather<'a, L: Linear<R, A>, const R: usize> {
    l: L,
    planes: &'a [&'a [f32]],
    at: Windows<R>,
    out: &'a mut [f32],
    scratch: &'a mut Scratch,
}

impl<L: Linear<R, A>, const R: usize> Vectorized for Gather<'_, L, R> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Self { l, planes, at, out, scratch } = self;
        let width = at.width();
        at.phase(planes, &mut scratch.phased);
        // vertical[s][a][t] = Σ_r L[a][r] · d_t[r][s]
        let vertical = &mut scratch.mixed;
        vertical.resize(R * A * width, 0.0);
        for ty in 0..at.tiles[0] {
            for (s, vertical) in vertical.chunks_mut(A * width).enumerate() {
                let inputs = std::array::from_fn(|r| &scratch.phased[at.run(r, s, ty)]);
                let outputs = rows_mut::<A>(vertical, width).map(|row| &mut row[at.row_of_tiles(ty)]);
                combine(l, inputs, outputs, false);
            }
        }
        // out[a][b][t] = Σ_s L[b][s] · vertical[s][a][t]
        for (a, out) in out.chunks_mut(A * width).enumerate() {
            let inputs = std::array::from_fn(|s| &vertical[(s * A + a) * width..][..width]);
            combine(l, inputs, rows_mut(out, width), false);
        }
    }
}

/// The transpose of [`Gather`]: for every tile t, L T Lᵀ `[R, R]` of its transformed tile T
/// (element (a, b) at `transformed[(a·α + b)·width + t]`) added onto its window, inside the
/// plane. With L = Aᵀ (R = m, no offset) this is the output transform; with L = B (R = α)
/// the input gradient's. Run it through [`vectorized`].
struct Scatter<'a, 'p, L: Linear<A, R>, const R: usize> {
    l: L,
    transformed: &'a [f32],
    planes: &'a mut [&'p mut [f32]],
    at: Windows<R>,
    scratch: &'a mut Scratch,
}

impl<L: Linear<A, R>, const R: usize> Vectorized for Scatter<'_, '_, L, R> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Self { l, transformed, planes, at, scratch } = self;
        let width = at.width();
        // horizontal[a][s][t] = Σ_b L[s][b] · T[a][b][t]
        let horizontal = &mut scratch.mixed;
        horizontal.resize(A * R * width, 0.0);
        for (transformed, horizontal) in transformed.chunks(A * width).zip(horizontal.chunks_mut(R * width)) {
            combine(l, rows(transformed, width), rows_mut(horizontal, width), false);
        }
        // window element (r, s) of tile t += Σ_a L[r][a] · horizontal[a][s][t]
        let phased = &mut scratch.phased;
        phased.clear();
        phased.resize(at.padded_rows() * at.row_len(), 0.0);
        for ty in 0..at.tiles[0] {
            for s in 0..R {
                let inputs = std::array::from_fn(|a| &horizontal[(a * R + s) * width..][at.row_of_tiles(ty)]);
                let window_rows = rows_mut::<R>(&mut phased[ty * M * at.row_len()..], at.row_len());
                let outputs = window_rows.map(|row| &mut row[at.run(0, s, 0)]);
                combine(l, inputs, outputs, true);
            }
        }
        at.add_unphased(phased, planes);
    }
}

/// [`combine`], run through [`vectorized`].
struct Combine<'a, 'o, L: Linear<I, O>, const I: usize, const O: usize> {
    l: L,
    inputs: [&'a [f32]; I],
    outputs: [&'o mut [f32]; O],
    accumulate: bool,
}

impl<L: Linear<I, O>, const I: usize, const O: usize> Vectorized for Combine<'_, '_, L, I, O> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        combine(self.l, self.inputs, self.outputs, self.accumulate)
    }
}

/// Elements per step of [`combine`]: one AVX-512 vector, two AVX2 ones.
const LANES: usize = 16;

/// `outputs[o] = Σ_i L[o][i] · inputs[i]` element by element (`+=` when `accumulate`), all
/// slices as long as the outputs. Each step loads [`LANES`] elements of every input once and
/// computes every output from them in registers.
#[inline(always)]
fn combine<L: Linear<I, O>, const I: usize, const O: usize>(_: L, inputs: [&[f32]; I], mut outputs: [&mut [f32]; O], accumulate: bool) {
    let len = outputs[0].len();
    assert!(inputs.iter().all(|x| x.len() >= len) && outputs.iter().all(|y| y.len() == len), "combine: slices of different lengths");
    let full = len / LANES * LANES;
    for start in (0..full).step_by(LANES) {
        let x: [[f32; LANES]; I] = std::array::from_fn(|i| inputs[i][start..start + LANES].try_into().expect("LANES elements"));
        for (o, output) in outputs.iter_mut().enumerate() {
            let y = combination(&L::L[o], &x);
            let output: &mut [f32; LANES] = (&mut output[start..start + LANES]).try_into().expect("LANES elements");
            for (output, y) in output.iter_mut().zip(y) {
                *output = if accumulate { *output + y } else { y };
            }
        }
    }
    for k in full..len {
        for (o, output) in outputs.iter_mut().enumerate() {
            let y = (0..I).fold(0.0, |sum, i| if L::L[o][i] != 0.0 { sum + L::L[o][i] * inputs[i][k] } else { sum });
            output[k] = if accumulate { output[k] + y } else { y };
        }
    }
}

/// Σ_i coefficients[i] · x[i], lane by lane, skipping zero coefficients.
#[inline(always)]
fn combination<const I: usize>(coefficients: &[f32; I], x: &[[f32; LANES]; I]) -> [f32; LANES] {
    let mut y = [0f32; LANES];
    for (coefficient, x) in coefficients.iter().zip(x) {
        if *coefficient != 0.0 {
            for (y, x) in y.iter_mut().zip(x) {
                *y += coefficient * x;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::flex_buffer::testing::assert_close;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Output, input gradient and weight gradient agree with the im2col kernel (itself checked
    /// against burn's convolution): sizes that are no multiple of the tile, padding 0 to 2 and
    /// uneven, outputs smaller than one tile, several groups of images, channel counts that
    /// leave partial blocks and vector tails.
    #[test]
    fn matches_im2col() {
        // (batch, c_in, c_out, input size, padding (top, left), output size)
        let cases = [
            (3, 5, 7, [9, 7], [1, 1], [9, 7]),
            (2, 4, 3, [8, 8], [0, 0], [6, 6]),
            (2, 3, 17, [5, 6], [2, 2], [7, 8]),
            (2, 6, 5, [7, 9], [1, 2], [6, 9]),
            (4, 2, 3, [3, 3], [1, 1], [3, 3]),
            (3, 2, 2, [2, 1], [1, 1], [2, 1]),
            (10, 3, 4, [32, 32], [1, 1], [32, 32]),
            (2, 70, 33, [4, 4], [1, 1], [4, 4]),
        ];
        for (index, (batch, c_in, c_out, in_size, padding, out_size)) in cases.into_iter().enumerate() {
            let g = Geometry { batch, in_channels: c_in, in_size, out_channels: c_out, kernel: [3, 3], stride: [1, 1], padding, dilation: [1, 1], out_size };
            let x = values(batch * c_in * in_size[0] * in_size[1], 3 * index as u64);
            let weight = values(c_out * c_in * 9, 3 * index as u64 + 1);
            let dy = values(batch * c_out * out_size[0] * out_size[1], 3 * index as u64 + 2);
            let case = format!("case {index} ({g:?})");
            assert_close(&format!("{case}: output"), forward(&x, &weight, g), super::super::kernel::forward(&x, &weight, g), 1e-5);
            let (x_grad, weight_grad) = backward(&x, &weight, &dy, g, true);
            let (want_x, want_weight) = super::super::kernel::backward(&x, &weight, &dy, g, true);
            assert_close(&format!("{case}: x grad"), x_grad.expect("x grad"), want_x.expect("x grad"), 1e-5);
            assert_close(&format!("{case}: weight grad"), weight_grad.clone(), want_weight.clone(), 1e-5);
            // Without the input gradient, the weight gradient is the same, bit for bit.
            for (kernel, (x_grad, without)) in [("winograd", backward(&x, &weight, &dy, g, false)), ("im2col", super::super::kernel::backward(&x, &weight, &dy, g, false))] {
                assert!(x_grad.is_none(), "{case}: {kernel} computed an input gradient nobody asked for");
                let with = if kernel == "winograd" { &weight_grad } else { &want_weight };
                assert_eq!(&without, with, "{case}: {kernel}'s weight gradient changed without the input gradient");
            }
        }
    }

    /// The transforms are the ones of F(4×4, 3×3): for a single tile, Aᵀ[(G w Gᵀ) ⊙ (Bᵀ d B)]A
    /// is the 4×4 correlation of the 6×6 window d with the 3×3 kernel w, computed directly.
    #[test]
    fn transforms_compute_a_tile() {
        let (d, w) = (values(36, 7), values(9, 8));
        let (bt, g, at) = (&TRANSFORMS.bt, &TRANSFORMS.g, &TRANSFORMS.at);
        let v: Vec<f32> = (0..36).map(|e| (0..36).map(|k| bt[e / 6][k / 6] * d[k] * bt[e % 6][k % 6]).sum()).collect();
        let u: Vec<f32> = (0..36).map(|e| (0..9).map(|k| g[e / 6][k / 3] * w[k] * g[e % 6][k % 3]).sum()).collect();
        let y: Vec<f32> = (0..16).map(|o| (0..36).map(|e| at[o / 4][e / 6] * u[e] * v[e] * at[o % 4][e % 6]).sum()).collect();
        let direct: Vec<f32> = (0..16).map(|o| (0..9).map(|k| d[(o / 4 + k / 3) * 6 + o % 4 + k % 3] * w[k]).sum()).collect();
        assert_close("tile", y, direct, 1e-5);
    }
}
