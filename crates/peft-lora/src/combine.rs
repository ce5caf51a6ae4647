//! Weighted combination of LoRA adapters into one (HF peft's `add_weighted_adapter`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Combination, PeftError, Result};

use crate::Lora;

/// One adapter standing for the weighted `parts`; see [`Combination`] for the formulas.
pub fn combine<B: Backend>(parts: &[(&Lora<B>, f64)], how: Combination) -> Result<Lora<B>> {
    let Some((first, _)) = parts.first() else {
        return Err(PeftError::InvalidConfig("no adapters to combine".into()));
    };
    if parts.iter().any(|(l, _)| l.magnitude.is_some() || l.bias.is_some()) {
        return Err(PeftError::CannotCombine("DoRA adapters and LoRA biases have no weighted combination".into()));
    }
    if parts.iter().any(|(_, w)| !w.is_finite()) {
        return Err(PeftError::InvalidConfig("combination weights must be finite".into()));
    }
    let (a, b) = match how {
        Combination::Linear => {
            if parts.iter().any(|(l, _)| l.rank() != first.rank()) {
                return Err(PeftError::InvalidConfig("linear combination needs adapters of equal rank; use Cat".into()));
            }
            let mut a = first.a.val().zeros_like();
            let mut b = first.b.val().zeros_like();
            for (lora, w) in parts {
                let root = (w.abs() * lora.scaling).sqrt();
                a = a + lora.a.val().mul_scalar(root * w.signum());
                b = b + lora.b.val().mul_scalar(root);
            }
            (a, b)
        }
        Combination::Cat => {
            let a = parts.iter().map(|(l, w)| l.a.val().mul_scalar(w * l.scaling)).collect::<Vec<Tensor<B, 2>>>();
            let b = parts.iter().map(|(l, _)| l.b.val()).collect::<Vec<Tensor<B, 2>>>();
            (Tensor::cat(a, 1), Tensor::cat(b, 0))
        }
    };
    Lora::from_factors(a.detach(), b.detach(), 1.0)
}
