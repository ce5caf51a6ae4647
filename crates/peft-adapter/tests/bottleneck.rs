//! Bottleneck adapters against closed forms.
use burn::backend::NdArray;
use burn::module::Module;
use burn::nn::{LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData};
use peft_adapter::{AdaptedNorm, AdaptedSublayer, AdapterActivation, AdapterPlacement, Bottleneck, BottleneckConfig};
use peft_core::{PeftModel, Residual, Targeting, Tuned, frozen_like};

type TB = NdArray;

#[derive(Module, Debug)]
struct Net<B: burn::tensor::backend::Backend> {
    ffn: AdaptedSublayer<B, Linear<B>>,
}
peft_core::adaptable!(Net { ffn });

/// The end of a post-norm sub-layer, `norm(h + r)`.
#[derive(Module, Debug)]
struct PostNorm<B: burn::tensor::backend::Backend> {
    norm: AdaptedNorm<B>,
}
peft_core::adaptable!(PostNorm { norm });

fn values<const D: usize>(t: Tensor<TB, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn t2(v: Vec<f32>, dims: [usize; 2]) -> Tensor<TB, 2> {
    Tensor::from_data(TensorData::new(v, dims), &Default::default())
}

fn relu(v: f32) -> f32 {
    v.max(0.0)
}

/// `h + s·(relu(z·Wd + bd)·Wu + bu)` on the host for one row `z` (d = 4, width 2).
fn adapter_row(z: &[f32], wd: &[f32], wu: &[f32], s: f32) -> Vec<f32> {
    let hidden: Vec<f32> = (0..2).map(|k| relu((0..4).map(|i| z[i] * wd[i * 2 + k]).sum::<f32>() + 0.1)).collect();
    (0..4).map(|j| s * ((0..2).map(|k| hidden[k] * wu[k * 4 + j]).sum::<f32>() - 0.2)).collect()
}

/// Gives `bn` the weights of [`adapter_row`].
fn set_weights(bn: &mut Bottleneck<TB>, wd: &[f32], wu: &[f32]) {
    let device = Default::default();
    bn.down.weight = frozen_like(&bn.down.weight, t2(wd.to_vec(), [4, 2]));
    bn.down.bias = Some(frozen_like(bn.down.bias.as_ref().unwrap(), Tensor::full([2], 0.1, &device)));
    bn.up.weight = frozen_like(&bn.up.weight, t2(wu.to_vec(), [2, 4]));
    bn.up.bias = Some(frozen_like(bn.up.bias.as_ref().unwrap(), Tensor::full([4], -0.2, &device)));
}

fn run(placement: AdapterPlacement) {
    let device = Default::default();
    let sub = LinearConfig::new(4, 4).init::<TB>(&device);
    let mut net = Net { ffn: Tuned::new(sub) };
    let config = BottleneckConfig::new(Targeting::names(&["ffn"])).with_reduction_factor(2).with_placement(placement).with_scaling(1.5);
    let x = t2((0..8).map(|i| i as f32 / 4.0 - 1.0).collect(), [2, 4]);
    let base_out = values(net.ffn.base.forward(x.clone()));
    net.add_adapter("bn", &config).unwrap();
    assert_eq!(values(net.ffn.forward(x.clone())), base_out, "zero up-projection must start as identity");

    let wd: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 4.0).collect();
    let wu: Vec<f32> = (0..8).map(|i| (i as f32 - 2.0) / 5.0).collect();
    set_weights(net.ffn.adapter_mut("bn").unwrap(), &wd, &wu);
    let got = values(net.ffn.forward(x.clone()));
    let xv = values(x);
    for row in 0..2 {
        let h = &base_out[row * 4..row * 4 + 4];
        let source = if placement == AdapterPlacement::Parallel { &xv[row * 4..row * 4 + 4] } else { h };
        let delta = adapter_row(source, &wd, &wu, 1.5);
        for j in 0..4 {
            let want = h[j] + delta[j];
            assert!((got[row * 4 + j] - want).abs() < 1e-5, "{placement:?} [{row},{j}]: {} vs {want}", got[row * 4 + j]);
        }
    }
}

#[test]
fn sequential_adapter_reads_the_sublayer_output() {
    run(AdapterPlacement::Sequential);
}

#[test]
fn parallel_adapter_reads_the_sublayer_input() {
    run(AdapterPlacement::Parallel);
}

/// `gamma·(v - mean)/sqrt(var + eps) + beta` for one row.
fn layer_norm_row(v: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    v.iter().enumerate().map(|(j, x)| gamma[j] * (x - mean) / (var + 1e-5).sqrt() + beta[j]).collect()
}

/// At the norm closing a residual sub-layer: `norm(h + r + s·f(source))` with `source` = `h`,
/// `norm(h + r)` or `r`, AdapterHub's three placements.
fn run_at_norm(placement: AdapterPlacement) {
    let device = Default::default();
    let mut norm = LayerNormConfig::new(4).init::<TB>(&device);
    let gamma: Vec<f32> = vec![1.0, 0.5, 2.0, -1.0];
    let beta: Vec<f32> = vec![0.1, 0.0, -0.3, 0.2];
    norm.gamma = frozen_like(&norm.gamma, Tensor::from_data(TensorData::new(gamma.clone(), [4]), &device));
    norm.beta = Some(frozen_like(norm.beta.as_ref().unwrap(), Tensor::from_data(TensorData::new(beta.clone(), [4]), &device)));
    let mut net = PostNorm { norm: Tuned::new(norm) };
    let h = t2((0..8).map(|i| (i as f32 * 0.7).sin()).collect(), [2, 4]);
    let r = t2((0..8).map(|i| (i as f32 * 1.3).cos()).collect(), [2, 4]);
    let input = || Residual { hidden: h.clone(), residual: r.clone() };
    let base = values(net.norm.forward(input()));
    let config = BottleneckConfig::new(Targeting::names(&["norm"])).with_reduction_factor(2).with_placement(placement).with_scaling(1.5);
    net.add_adapter("bn", &config).unwrap();
    assert_eq!(values(net.norm.forward(input())), base, "zero up-projection must start as the base");
    let wd: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 4.0).collect();
    let wu: Vec<f32> = (0..8).map(|i| (i as f32 - 2.0) / 5.0).collect();
    set_weights(net.norm.adapter_mut("bn").unwrap(), &wd, &wu);
    let got = values(net.norm.forward(input()));
    let (hv, rv) = (values(h.clone()), values(r.clone()));
    for row in 0..2 {
        let span = row * 4..row * 4 + 4;
        let sum: Vec<f32> = (0..4).map(|j| hv[row * 4 + j] + rv[row * 4 + j]).collect();
        let source = match placement {
            AdapterPlacement::Sequential => hv[span.clone()].to_vec(),
            AdapterPlacement::AfterNorm => layer_norm_row(&sum, &gamma, &beta),
            AdapterPlacement::Parallel => rv[span.clone()].to_vec(),
        };
        let delta = adapter_row(&source, &wd, &wu, 1.5);
        let want = layer_norm_row(&(0..4).map(|j| sum[j] + delta[j]).collect::<Vec<_>>(), &gamma, &beta);
        for j in 0..4 {
            assert!((got[row * 4 + j] - want[j]).abs() < 1e-5, "{placement:?} [{row},{j}]: {} vs {}", got[row * 4 + j], want[j]);
        }
    }
}

#[test]
fn at_a_norm_each_placement_adds_inside_the_norm() {
    for placement in [AdapterPlacement::Sequential, AdapterPlacement::AfterNorm, AdapterPlacement::Parallel] {
        run_at_norm(placement);
    }
}

/// A gate `σ(gate(source))`, averaged over the sequence, scales the adapter's output; at its
/// initial value it is about 1/2 (weights N(0, 0.02), no bias).
#[test]
fn a_gate_scales_the_output_by_its_mean_over_the_sequence() {
    let device = Default::default();
    let mut net = PostNorm { norm: Tuned::new(LayerNormConfig::new(4).init::<TB>(&device)) };
    let config = BottleneckConfig::new(Targeting::names(&["norm"])).with_reduction_factor(2).with_placement(AdapterPlacement::Sequential).with_gating(true);
    net.add_adapter("bn", &config).unwrap();
    let bn = net.norm.adapter_mut("bn").unwrap();
    let gate = bn.gate.as_ref().unwrap();
    assert_eq!(gate.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap(), [0.0]);
    let wd: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 4.0).collect();
    let wu: Vec<f32> = (0..8).map(|i| (i as f32 - 2.0) / 5.0).collect();
    set_weights(bn, &wd, &wu);
    let wg = [0.5f32, -1.0, 0.25, 2.0];
    let g = bn.gate.as_mut().unwrap();
    g.weight = frozen_like(&g.weight, t2(wg.to_vec(), [4, 1]));
    g.bias = Some(frozen_like(g.bias.as_ref().unwrap(), Tensor::full([1], 0.3, &device)));
    // One sequence of two positions.
    let h: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).sin()).collect();
    let r: Vec<f32> = (0..8).map(|i| (i as f32 * 1.3).cos()).collect();
    let t3 = |v: &Vec<f32>| Tensor::<TB, 3>::from_data(TensorData::new(v.clone(), [1, 2, 4]), &device);
    let got = values(net.norm.forward(Residual { hidden: t3(&h), residual: t3(&r) }));
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let gate: f32 = (0..2).map(|p| sigmoid((0..4).map(|j| h[p * 4 + j] * wg[j]).sum::<f32>() + 0.3)).sum::<f32>() / 2.0;
    let (gamma, beta) = ([1.0f32; 4], [0.0f32; 4]);
    for p in 0..2 {
        let delta = adapter_row(&h[p * 4..p * 4 + 4], &wd, &wu, 1.0);
        let want = layer_norm_row(&(0..4).map(|j| h[p * 4 + j] + r[p * 4 + j] + gate * delta[j]).collect::<Vec<_>>(), &gamma, &beta);
        for j in 0..4 {
            assert!((got[p * 4 + j] - want[j]).abs() < 1e-5, "[{p},{j}]: {} vs {}", got[p * 4 + j], want[j]);
        }
    }
}

#[test]
fn after_norm_on_a_sublayer_without_a_norm_reads_its_output() {
    run(AdapterPlacement::AfterNorm);
}

#[test]
fn presets_follow_adapterhub() {
    let t = Targeting::names(&["ffn"]);
    let p = BottleneckConfig::pfeiffer(t.clone());
    assert_eq!((p.reduction_factor, p.activation, p.placement), (16, AdapterActivation::Relu, AdapterPlacement::AfterNorm));
    let h = BottleneckConfig::houlsby(t.clone());
    assert_eq!((h.reduction_factor, h.activation), (16, AdapterActivation::Swish));
    let par = BottleneckConfig::parallel(t);
    assert_eq!((par.reduction_factor, par.placement, par.scaling), (2, AdapterPlacement::Parallel, 4.0));
}

#[test]
fn a_reduction_factor_wider_than_the_layer_is_an_error() {
    let mut net = Net { ffn: Tuned::new(LinearConfig::new(4, 4).init::<TB>(&Default::default())) };
    let err = net.add_adapter("bn", &BottleneckConfig::new(Targeting::names(&["ffn"]))).unwrap_err();
    assert!(matches!(err, peft_core::PeftError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("reduction factor 16"));
}
