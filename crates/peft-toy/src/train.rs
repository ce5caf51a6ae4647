//! A plain training loop for [`TinyTransformer`] on [`synthetic`](crate::synthetic) examples,
//! shared by the example, the tests and the benchmark.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use peft_core::{TrainMode, set_trainable};
use peft_quant::fused::FusedOps;

use crate::TinyTransformer;
use crate::synthetic::{Example, Lcg, batch};

/// Loss and accuracy on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Share of correct predictions.
    pub accuracy: f32,
}

impl core::fmt::Display for Metrics {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "loss {:.4}, accuracy {:.1}%", self.loss, 100.0 * self.accuracy)
    }
}

/// Evaluates `model` on `data` (no gradients).
pub fn evaluate<B: FusedOps>(model: &TinyTransformer<B>, data: &[Example]) -> Metrics {
    let device = model.head.weight.device();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for chunk in data.chunks(256) {
        let (tokens, labels) = batch::<B>(chunk, &device);
        let logits = model.forward(tokens);
        let l = CrossEntropyLossConfig::new().init(&device).forward(logits.clone(), labels.clone());
        loss += l.into_scalar().elem::<f64>() * chunk.len() as f64;
        correct += logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum().into_scalar().elem::<i64>() as usize;
    }
    Metrics { loss: (loss / data.len() as f64) as f32, accuracy: correct as f32 / data.len() as f32 }
}

/// Settings of [`fit`].
#[derive(Clone, Copy, Debug)]
pub struct FitConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the batch order.
    pub seed: u64,
}

/// Trains the parameters `mode` selects with Adam and cross-entropy; returns the model and the
/// loss of every step.
pub fn fit<B: AutodiffBackend + FusedOps>(model: TinyTransformer<B>, data: &[Example], mode: &TrainMode, config: FitConfig) -> (TinyTransformer<B>, Vec<f32>) {
    let device = model.head.weight.device();
    let mut model = set_trainable(model, mode);
    let mut optim = AdamConfig::new().init::<B, TinyTransformer<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = Lcg::new(config.seed);
    let mut losses = Vec::with_capacity(config.steps);
    for _ in 0..config.steps {
        let examples: Vec<Example> = (0..config.batch_size).map(|_| data[rng.below(data.len())].clone()).collect();
        let (tokens, labels) = batch::<B>(&examples, &device);
        let loss = loss_fn.forward(model.forward(tokens), labels);
        losses.push(loss.clone().into_scalar().elem::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(config.lr, model, grads);
    }
    (model, losses)
}

/// The inference copy of a trained model.
pub fn inference<B: AutodiffBackend>(model: &TinyTransformer<B>) -> TinyTransformer<B::InnerBackend> {
    model.valid()
}
