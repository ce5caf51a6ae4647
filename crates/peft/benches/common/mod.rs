//! Timing helpers shared by the benches that compare two variants in one run.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};

/// A closure running one optimizer step of next-token cross-entropy on `tokens`.
pub fn stepper<B: AutodiffBackend, M: AutodiffModule<B> + 'static>(model: M, forward: fn(&M, Tensor<B, 2, Int>) -> Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> impl FnMut() {
    let mut model = Some(model);
    let mut optim = AdamConfig::new().init::<B, M>();
    move || {
        let m = model.take().expect("put back after each step");
        let [batch, seq] = tokens.dims();
        let logits = forward(&m, tokens.clone().narrow(1, 0, seq - 1));
        let vocab = logits.dims()[2];
        let logits = logits.reshape([batch * (seq - 1), vocab]);
        let targets = tokens.clone().narrow(1, 1, seq - 1).reshape([batch * (seq - 1)]);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&logits.device()).forward(logits, targets);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-4, m, grads));
    }
}

/// Medians (ms) of `n` runs of `a` and `b`, alternated so that the machine's drift cancels.
pub fn alternating(n: usize, a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut x, mut y): (Vec<f64>, Vec<f64>) = (0..n).map(|_| (time(a), time(b))).unzip();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut x), median(&mut y))
}
