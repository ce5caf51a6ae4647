//! A thin singular value decomposition on the host (one-sided Jacobi), for PiSSA.

use peft_core::checkpoint::transpose;

/// `m = U·diag(S)·Vᵀ` for a row-major `rows × cols` matrix, `k = min(rows, cols)`.
///
/// Returns `U` (`rows × k`, row-major), `S` (descending) and `Vᵀ` (`k × cols`, row-major).
pub fn svd(m: &[f64], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    if rows < cols {
        let t = transpose(m, rows, cols);
        let (u, s, vt) = svd(&t, cols, rows);
        // mᵀ = U' S V'ᵀ  =>  m = V' S U'ᵀ
        let k = s.len();
        return (transpose(&vt, k, rows), s, transpose(&u, cols, k));
    }
    // Orthogonalize the columns of a (rows × cols), accumulating the rotations in v.
    let mut a = m.to_vec();
    let mut v = vec![0.0; cols * cols];
    for i in 0..cols {
        v[i * cols + i] = 1.0;
    }
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..cols {
            for q in p + 1..cols {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..rows {
                    let (x, y) = (a[i * cols + p], a[i * cols + q]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for i in 0..rows {
                    let (x, y) = (a[i * cols + p], a[i * cols + q]);
                    a[i * cols + p] = c * x - s * y;
                    a[i * cols + q] = s * x + c * y;
                }
                for i in 0..cols {
                    let (x, y) = (v[i * cols + p], v[i * cols + q]);
                    v[i * cols + p] = c * x - s * y;
                    v[i * cols + q] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..cols).map(|j| (0..rows).map(|i| a[i * cols + j].powi(2)).sum::<f64>().sqrt()).collect();
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&x, &y| norms[y].total_cmp(&norms[x]));
    let k = cols;
    let mut u = vec![0.0; rows * k];
    let mut s = vec![0.0; k];
    let mut vt = vec![0.0; k * cols];
    for (new, &old) in order.iter().enumerate() {
        s[new] = norms[old];
        for i in 0..rows {
            u[i * k + new] = if norms[old] > 0.0 { a[i * cols + old] / norms[old] } else { 0.0 };
        }
        for j in 0..cols {
            vt[new * cols + j] = v[j * cols + old];
        }
    }
    (u, s, vt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(u: &[f64], s: &[f64], vt: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        let k = s.len();
        let mut m = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                m[i * cols + j] = (0..k).map(|l| u[i * k + l] * s[l] * vt[l * cols + j]).sum();
            }
        }
        m
    }

    #[test]
    fn reconstructs_tall_and_wide_matrices() {
        for (rows, cols) in [(5, 3), (3, 5), (4, 4)] {
            let m: Vec<f64> = (0..rows * cols).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
            let (u, s, vt) = svd(&m, rows, cols);
            assert!(s.windows(2).all(|w| w[0] >= w[1]));
            let back = reconstruct(&u, &s, &vt, rows, cols);
            for (x, y) in m.iter().zip(&back) {
                assert!((x - y).abs() < 1e-9, "{rows}x{cols}: {x} vs {y}");
            }
        }
    }
}
