//! Per-example adapters: the values a [`Tuned`](crate::Tuned) layer passes around, seen as
//! batches whose first dimension indexes examples, so that each example can take another
//! adapter's result.

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Bool, Element, Tensor, TensorData};

use crate::Residual;

/// A batch along its first dimension (a layer's input or output), from which rows can be taken.
pub trait Rows: Clone {
    /// Examples in the batch.
    fn batch(&self) -> usize;
    /// `self` with the rows where `mask` is true taken from `other` (of the same shape),
    /// value for value.
    fn take_rows(self, other: Self, mask: &[bool]) -> Self;
}

impl<B: Backend, const D: usize, K: BasicOps<B>> Rows for Tensor<B, D, K>
where
    K::Elem: Element,
{
    fn batch(&self) -> usize {
        self.dims()[0]
    }

    fn take_rows(self, other: Self, mask: &[bool]) -> Self {
        let shape = self.dims();
        let mut rows = [1usize; D];
        rows[0] = mask.len();
        let mask = Tensor::<B, 1, Bool>::from_data(TensorData::new(mask.to_vec(), [mask.len()]), &self.device()).reshape(rows).expand(shape);
        self.mask_where(mask, other)
    }
}

impl<B: Backend, const D: usize> Rows for Residual<B, D> {
    fn batch(&self) -> usize {
        self.hidden.batch()
    }

    fn take_rows(self, other: Self, mask: &[bool]) -> Self {
        Residual { hidden: self.hidden.take_rows(other.hidden, mask), residual: self.residual.take_rows(other.residual, mask) }
    }
}

impl<A: Rows, C: Rows> Rows for (A, C) {
    fn batch(&self) -> usize {
        self.0.batch()
    }

    fn take_rows(self, other: Self, mask: &[bool]) -> Self {
        (self.0.take_rows(other.0, mask), self.1.take_rows(other.1, mask))
    }
}
