//! Blockwise absmax quantization over a flattened tensor, as bitsandbytes computes it on the CPU.

use crate::{DYNAMIC_MAP, QuantError, QuantType, Result};

/// Checks a block size: a power of two from 32 to 4096.
pub fn check_blocksize(blocksize: usize) -> Result<()> {
    if !(32..=4096).contains(&blocksize) || !blocksize.is_power_of_two() {
        return Err(QuantError::InvalidBlocksize(blocksize));
    }
    Ok(())
}

/// Quantizes `data` to 4-bit codes: returns the packed bytes (`ceil(n/2)`, element `2i` in the
/// high nibble) and one absmax per block of `blocksize` (the last block may be partial).
///
/// Full blocks are scaled by `x·(1/absmax)`, the partial last block by `x/absmax`, both clamped
/// to `[-1, 1]`, then rounded to the nearest code; exactly bitsandbytes' reference kernel.
pub fn quantize_4bit(data: &[f32], blocksize: usize, quant_type: QuantType) -> Result<(Vec<u8>, Vec<f32>)> {
    check_blocksize(blocksize)?;
    let encode = quant_type.encoder();
    let full = data.len() - data.len() % blocksize;
    let mut codes = Vec::with_capacity(data.len() + 1);
    let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
    for block in data[..full].chunks(blocksize) {
        let max = abs_max(block);
        let inv = 1.0 / max.max(MIN_ABSMAX);
        codes.extend(block.iter().map(|v| encode((v * inv).clamp(-1.0, 1.0))));
        absmax.push(max);
    }
    if full < data.len() {
        let tail = &data[full..];
        let max = abs_max(tail).max(MIN_ABSMAX);
        codes.extend(tail.iter().map(|v| encode((v / max).clamp(-1.0, 1.0))));
        absmax.push(max);
    }
    if codes.len() % 2 == 1 {
        codes.push(encode(0.0));
    }
    let packed = codes.chunks(2).map(|pair| (pair[0] << 4) | pair[1]).collect();
    Ok((packed, absmax))
}

/// bitsandbytes clamps the divisor of a block to this (`absmax.clamp(min=1e-38)`).
const MIN_ABSMAX: f32 = 1e-38;

fn abs_max(block: &[f32]) -> f32 {
    block.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Dequantizes `n` values from packed 4-bit codes: `code[q]·absmax[block]` in `f32`.
pub fn dequantize_4bit(packed: &[u8], absmax: &[f32], code: &[f32; 16], blocksize: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let byte = packed[i / 2];
            let q = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            code[q as usize] * absmax[i / blocksize]
        })
        .collect()
}

/// 8-bit blockwise quantization with bitsandbytes' dynamic map: each value `x/absmax` goes to
/// the nearest map entry, ties to the lower one. Returns codes and absmax.
///
/// bitsandbytes' CPU kernel finds the entry with an approximate bucketed search that can miss
/// the nearest entry where the map is densest (normalized values within about 1e-4 of zero;
/// e.g. it maps 0.0 to 2.1e-5); this function takes the nearest, as the CUDA kernel does.
pub fn quantize_8bit(data: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let code = DYNAMIC_MAP;
    let mut out = Vec::with_capacity(data.len());
    let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
    for block in data.chunks(blocksize) {
        let max = block.iter().fold(-f32::MAX, |m, v| m.max(v.abs()));
        absmax.push(max);
        for v in block {
            let x = v / max;
            if !x.is_finite() {
                out.push(zero_index());
                continue;
            }
            let mut idx = code.partition_point(|c| *c <= x).saturating_sub(1);
            if idx < 255 && (x - code[idx + 1]).abs() < (x - code[idx]).abs() {
                idx += 1;
            }
            out.push(idx as u8);
        }
    }
    (out, absmax)
}

fn zero_index() -> u8 {
    DYNAMIC_MAP.iter().position(|c| *c == 0.0).unwrap_or(127) as u8
}

/// Dequantizes 8-bit codes: `map[q]·absmax[block]`.
pub fn dequantize_8bit(codes: &[u8], absmax: &[f32], map: &[f32], blocksize: usize) -> Vec<f32> {
    codes.iter().enumerate().map(|(i, q)| map[*q as usize] * absmax[i / blocksize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_powers_of_two_from_32_to_4096() {
        assert!(check_blocksize(64).is_ok() && check_blocksize(32).is_ok() && check_blocksize(4096).is_ok());
        for bad in [0, 16, 48, 8192] {
            assert!(matches!(check_blocksize(bad), Err(QuantError::InvalidBlocksize(_))));
        }
    }

    #[test]
    fn every_dequantized_value_is_within_half_a_code_step_of_the_input() {
        let data: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            let (packed, absmax) = quantize_4bit(&data, 64, qt).unwrap();
            let code = qt.code();
            let back = dequantize_4bit(&packed, &absmax, &code, 64, data.len());
            let mut sorted = code;
            sorted.sort_by(f32::total_cmp);
            let max_gap = sorted.windows(2).map(|w| w[1] - w[0]).fold(0.0, f32::max);
            for (i, (x, y)) in data.iter().zip(&back).enumerate() {
                let bound = absmax[i / 64] * max_gap / 2.0 * 1.0001;
                assert!((x - y).abs() <= bound, "{qt:?} [{i}]: {x} vs {y}, bound {bound}");
            }
        }
    }
}
