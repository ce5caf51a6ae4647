//! The CPU path of the 4-bit linear product: decoding on the host and multiplying tile by tile,
//! so that no dense copy of the whole weight is ever made.
//!
//! A tile of the weight (a few hundred kilobytes, cache-sized) is decoded into a scratch buffer
//! and multiplied at once with `matrixmultiply`'s SGEMM (the kernel burn-ndarray itself uses),
//! writing straight into its columns of the output. Forward tiles run over output rows
//! (`y = x·Wᵀ`), backward tiles over input columns (`∂x = ∂y·W`).

/// A packed weight on the host: codes, 16 per `i64` word, the first in the highest nibble.
pub(crate) struct HostWeight<'a> {
    pub words: &'a [i64],
    pub absmax: &'a [f32],
    pub code: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub blocksize: usize,
}

/// Values per scratch tile (256 KiB of f32).
const TILE: usize = 1 << 16;

impl HostWeight<'_> {
    /// Decodes the flattened elements `start..start + out.len()`.
    pub(crate) fn decode_range(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        let mut pos = start;
        while pos < end {
            let block = pos / self.blocksize;
            let stop = ((block + 1) * self.blocksize).min(end);
            let scale = self.absmax[block];
            let table: [f32; 16] = core::array::from_fn(|q| self.code[q] * scale);
            let mut idx = pos;
            // Whole words at once where the run is aligned (the common case), single codes elsewhere.
            while idx < stop {
                let word = self.words[idx / 16];
                if idx.is_multiple_of(16) && idx + 16 <= stop {
                    let dst = &mut out[idx - start..idx - start + 16];
                    for (k, value) in dst.iter_mut().enumerate() {
                        *value = table[((word >> (60 - 4 * k)) & 15) as usize];
                    }
                    idx += 16;
                } else {
                    out[idx - start] = table[((word >> (60 - 4 * (idx % 16))) & 15) as usize];
                    idx += 1;
                }
            }
            pos = stop;
        }
    }

    /// The dense weight `[rows, cols]`, row-major.
    pub(crate) fn decode_all(&self) -> Vec<f32> {
        let n = self.rows * self.cols;
        let mut out = vec![0f32; n];
        let per = n.div_ceil(threads()).max(1);
        std::thread::scope(|s| {
            for (t, chunk) in out.chunks_mut(per).enumerate() {
                s.spawn(move || self.decode_range(t * per, chunk));
            }
        });
        out
    }

    /// `x [n, cols] · Wᵀ -> [n, rows]`.
    pub(crate) fn linear(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let mut y = vec![0f32; n * rows];
        let tile_rows = (TILE / cols.max(1)).clamp(1, rows.max(1));
        let tiles: Vec<(usize, usize)> = (0..rows).step_by(tile_rows).map(|r0| (r0, (r0 + tile_rows).min(rows))).collect();
        let y_ptr = y.as_mut_ptr();
        self.for_tiles(&tiles, |&(r0, r1), buf| {
            let buf = &mut buf[..(r1 - r0) * cols];
            self.decode_range(r0 * cols, buf);
            // y[:, r0..r1] = x · buf^T, buf being rows r0..r1 of W ([r1 - r0, cols], row-major).
            unsafe {
                matrixmultiply::sgemm(
                    n, cols, r1 - r0, 1.0,
                    x.as_ptr(), cols as isize, 1,
                    buf.as_ptr(), 1, cols as isize,
                    0.0, y_ptr.add(r0), rows as isize, 1,
                );
            }
        });
        y
    }

    /// `g [n, rows] · W -> [n, cols]`.
    pub(crate) fn linear_backward(&self, g: &[f32], n: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let mut dx = vec![0f32; n * cols];
        // Column tiles at least 64 wide (SGEMM is slow on narrow matrices), in whole 16-code words.
        let tile_cols = (TILE / rows.max(1) / 16 * 16).max(64).min(cols.max(1));
        let tiles: Vec<(usize, usize)> = (0..cols).step_by(tile_cols).map(|c0| (c0, (c0 + tile_cols).min(cols))).collect();
        let dx_ptr = dx.as_mut_ptr();
        self.for_tiles(&tiles, |&(c0, c1), buf| {
            let width = c1 - c0;
            let buf = &mut buf[..rows * width];
            for (r, row) in buf.chunks_mut(width).enumerate() {
                self.decode_range(r * cols + c0, row);
            }
            // dx[:, c0..c1] = g · W[:, c0..c1].
            unsafe {
                matrixmultiply::sgemm(
                    n, rows, width, 1.0,
                    g.as_ptr(), rows as isize, 1,
                    buf.as_ptr(), width as isize, 1,
                    0.0, dx_ptr.add(c0), cols as isize, 1,
                );
            }
        });
        dx
    }

    /// Runs `f` on every tile in turn with one scratch buffer. The cores work inside each
    /// SGEMM (matrixmultiply's `threading`, which the `peft` facade turns on): measured faster
    /// than dealing tiles to threads that each run a threaded SGEMM.
    fn for_tiles<T>(&self, tiles: &[T], mut f: impl FnMut(&T, &mut [f32])) {
        let mut buf = vec![0f32; TILE.max(self.rows * 64).max(self.cols)];
        for tile in tiles {
            f(tile, &mut buf);
        }
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |t| t.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(rows: usize, cols: usize, blocksize: usize) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
        let n = rows * cols;
        let blocks = n.div_ceil(blocksize);
        let words: Vec<i64> = (0..n.div_ceil(16).max(blocks * blocksize / 16)).map(|i| (i as i64).wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64)).collect();
        let absmax: Vec<f32> = (0..blocks).map(|b| 0.5 + b as f32 * 0.01).collect();
        let code: Vec<f32> = (0..16).map(|q| q as f32 / 7.5 - 1.0).collect();
        (words, absmax, code)
    }

    fn dense_reference(w: &HostWeight<'_>) -> Vec<f32> {
        (0..w.rows * w.cols).map(|i| w.code[((w.words[i / 16] >> (60 - 4 * (i % 16))) & 15) as usize] * w.absmax[i / w.blocksize]).collect()
    }

    #[test]
    fn tiled_products_equal_dense_products() {
        // 300 x 70: tiles do not divide the shape, and blocks of 64 straddle rows.
        for (rows, cols, n) in [(300, 70, 5), (7, 1100, 3), (64, 64, 1)] {
            let (words, absmax, code) = weight(rows, cols, 64);
            let w = HostWeight { words: &words, absmax: &absmax, code: &code, rows, cols, blocksize: 64 };
            let dense = dense_reference(&w);
            assert_eq!(w.decode_all(), dense);
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 37 % 19) as f32 - 9.0) / 9.0).collect();
            let y = w.linear(&x, n);
            for i in 0..n {
                for r in 0..rows {
                    let expected: f32 = (0..cols).map(|c| x[i * cols + c] * dense[r * cols + c]).sum();
                    assert!((y[i * rows + r] - expected).abs() < 1e-3 * (1.0 + expected.abs()), "forward {rows}x{cols} at ({i}, {r})");
                }
            }
            let g: Vec<f32> = (0..n * rows).map(|i| ((i * 13 % 23) as f32 - 11.0) / 11.0).collect();
            let dx = w.linear_backward(&g, n);
            for i in 0..n {
                for c in 0..cols {
                    let expected: f32 = (0..rows).map(|r| g[i * rows + r] * dense[r * cols + c]).sum();
                    assert!((dx[i * cols + c] - expected).abs() < 1e-3 * (1.0 + expected.abs()), "backward {rows}x{cols} at ({i}, {c})");
                }
            }
        }
    }
}
