//! The 4-bit code tables and how values are rounded to them, as bitsandbytes does on the CPU.

use crate::{QuantError, Result};

/// A 4-bit data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    /// 4-bit NormalFloat.
    Nf4,
    /// bitsandbytes' 4-bit float (e2m1 with its own index order).
    Fp4,
}

impl QuantType {
    /// `"nf4"` or `"fp4"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nf4 => "nf4",
            Self::Fp4 => "fp4",
        }
    }

    /// The 16 values, indexed by code.
    pub fn code(self) -> [f32; 16] {
        match self {
            Self::Nf4 => NF4_CODE,
            Self::Fp4 => FP4_RAW.map(|v| v / 12.0),
        }
    }

    /// Code indices in ascending order of value (bitsandbytes' `argsort` of the code).
    fn order(self) -> [u8; 16] {
        match self {
            Self::Nf4 => core::array::from_fn(|i| i as u8),
            Self::Fp4 => FP4_ORDER,
        }
    }

    /// The 15 midpoints between neighbouring values, in `f32` as bitsandbytes computes them.
    fn bounds(self) -> [f32; 15] {
        let code = self.code();
        let order = self.order();
        core::array::from_fn(|i| (code[order[i] as usize] + code[order[i + 1] as usize]) / 2.0)
    }

    /// The code of a value already scaled into `[-1, 1]`: the bucket of the midpoints it falls in
    /// (a value on a midpoint goes to the lower bucket, as `torch.bucketize`).
    pub fn encoder(self) -> impl Fn(f32) -> u8 {
        let bounds = self.bounds();
        let order = self.order();
        move |x| order[bounds.iter().filter(|b| **b < x).count()]
    }
}

impl core::str::FromStr for QuantType {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nf4" => Ok(Self::Nf4),
            "fp4" => Ok(Self::Fp4),
            other => Err(QuantError::UnknownQuantType(other.to_string())),
        }
    }
}

/// bitsandbytes' NF4 code: the 16 values a 4-bit NormalFloat index stands for, written as
/// bitsandbytes prints them.
#[allow(clippy::excessive_precision)]
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// bitsandbytes' FP4 values before division by 12. Index 8 is written `-0` in its Python list,
/// an integer, so it is `+0.0` in its table too.
const FP4_RAW: [f32; 16] = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, 0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0];

/// `torch.argsort` of the FP4 code as bitsandbytes gets it (of the two zeros, index 0 first).
const FP4_ORDER: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_the_encoder() {
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            let encode = qt.encoder();
            for (i, v) in qt.code().iter().enumerate() {
                let back = encode(*v) as usize;
                assert_eq!(qt.code()[back], *v, "{qt:?} code {i}");
            }
        }
        assert!(NF4_CODE.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(QuantType::Fp4.code()[3], 1.0);
        assert!("nf5".parse::<QuantType>().is_err());
    }
}
