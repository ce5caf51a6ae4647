//! Each formula of the LoRA family against a closed-form computation on the host.
use crate::common;
use common::*;

use burn::module::Module;
use burn::tensor::Tensor;
use peft_core::{PeftModel, Targeting, Tuned};
use peft_lora::{Ia3, Ia3Config, Ia3Linear, Lora, LoraConfig, LoraInit, LoraLinear};

const D_IN: usize = 6;
const D_OUT: usize = 4;
const N: usize = 3;

fn host_linear(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = matmul(x, w, N, D_IN, D_OUT);
    for i in 0..N {
        for j in 0..D_OUT {
            y[i * D_OUT + j] += b[j];
        }
    }
    y
}

#[test]
fn lora_is_base_plus_scaled_low_rank_product() {
    let base = linear::<Nd>(D_IN, D_OUT, 1);
    let (w, bias) = (values(&base.weight.val()), values(&base.bias.as_ref().unwrap().val()));
    let (a, b) = (tensor::<Nd, 2>([D_IN, 2], 3), tensor::<Nd, 2>([2, D_OUT], 4));
    let s = 0.75;
    let layer = LoraLinear::new(base).with_adapter("x", Lora::from_factors(a.clone(), b.clone(), s).unwrap()).unwrap();
    let x = tensor::<Nd, 2>([N, D_IN], 5);
    let got = values(&layer.forward(x.clone()));
    let xv = values(&x);
    let mut want = host_linear(&xv, &w, &bias);
    let xab = matmul(&matmul(&xv, &values(&a), N, D_IN, 2), &values(&b), N, 2, D_OUT);
    want.iter_mut().zip(&xab).for_each(|(y, d)| *y += s as f32 * d);
    assert_close(&got, &want, 1e-6, "lora");
}

#[test]
fn works_on_three_dimensional_activations() {
    let layer = LoraLinear::new(linear::<Nd>(D_IN, D_OUT, 1))
        .with_adapter("x", Lora::from_factors(tensor([D_IN, 2], 3), tensor([2, D_OUT], 4), 0.5).unwrap())
        .unwrap();
    let x3 = tensor::<Nd, 3>([2, N, D_IN], 9);
    let y3 = layer.forward(x3.clone());
    assert_eq!(y3.dims(), [2, N, D_OUT]);
    let y2 = layer.forward(x3.reshape([2 * N, D_IN]));
    assert_close(&values(&y3), &values(&y2), 1e-6, "3-d vs 2-d");
}

#[test]
fn scaling_is_alpha_over_r_or_alpha_over_sqrt_r() {
    let c = LoraConfig::new(Targeting::names(&["q"])).with_r(4).with_alpha(16.0);
    assert_eq!(c.rank_and_scaling("q").unwrap(), (4, 4.0));
    let c = c.with_use_rslora(true);
    assert_eq!(c.rank_and_scaling("q").unwrap(), (4, 8.0));
    let mut c = LoraConfig::new(Targeting::names(&["q"])).with_r(8).with_alpha(8.0);
    c.rank_pattern.insert("layers\\.1\\.q".into(), 2);
    c.alpha_pattern.insert("q".into(), 4.0);
    assert_eq!(c.rank_and_scaling("layers.0.q").unwrap(), (8, 0.5));
    assert_eq!(c.rank_and_scaling("layers.1.q").unwrap(), (2, 2.0));
}

#[test]
fn dora_matches_closed_form() {
    let base = linear::<Nd>(D_IN, D_OUT, 11);
    let (w, bias) = (values(&base.weight.val()), values(&base.bias.as_ref().unwrap().val()));
    let mut layer: LoraLinear<Nd> = LoraLinear::new(base);
    let config = LoraConfig::new(Targeting::names(&["l"])).with_r(2).with_alpha(4.0).with_use_dora(true);
    let mut single = SingleLayer { l: layer.clone() };
    single.add_adapter("d", &config).unwrap();
    layer = single.l;
    // Give Nd and the magnitude non-trivial values.
    let lora = layer.adapter_mut("d").unwrap();
    let a = lora.a.val();
    *lora = lora.clone().load_factors(a.clone(), tensor([2, D_OUT], 12)).unwrap();
    let m = tensor::<Nd, 1>([D_OUT], 13).abs() + 0.5;
    lora.magnitude = Some(burn::module::Param::from_tensor(m.clone()));
    let (av, bv, mv, s) = (values(&a), values(&lora.b.val()), values(&m), lora.scaling as f32);

    let x = tensor::<Nd, 2>([N, D_IN], 14);
    let got = values(&layer.forward(x.clone()));
    let xv = values(&x);
    let ab = matmul(&av, &bv, D_IN, 2, D_OUT);
    let norm: Vec<f32> = (0..D_OUT).map(|j| (0..D_IN).map(|i| (w[i * D_OUT + j] + s * ab[i * D_OUT + j]).powi(2)).sum::<f32>().sqrt()).collect();
    let xw = matmul(&xv, &w, N, D_IN, D_OUT);
    let xab = matmul(&xv, &ab, N, D_IN, D_OUT);
    let mut want = vec![0f32; N * D_OUT];
    for i in 0..N {
        for j in 0..D_OUT {
            let k = i * D_OUT + j;
            let scale = mv[j] / norm[j];
            // base (with bias) + (scale - 1)·x·W + scale·s·x·A·Nd  ==  scale·x·(W + sAB) + bias
            want[k] = xw[k] + bias[j] + (scale - 1.0) * xw[k] + scale * s * xab[k];
        }
    }
    assert_close(&got, &want, 1e-5, "dora");
}

#[derive(burn::module::Module, Debug)]
struct SingleLayer<B: burn::tensor::backend::Backend> {
    l: LoraLinear<B>,
}
peft_core::adaptable!(SingleLayer { l });

#[test]
fn dora_magnitude_starts_at_the_weight_norm_so_the_output_is_unchanged() {
    let mut m = SingleLayer::<Nd> { l: LoraLinear::new(linear(D_IN, D_OUT, 21)) };
    let x = tensor::<Nd, 2>([N, D_IN], 22);
    let before = values(&m.l.forward(x.clone()));
    m.add_adapter("d", &LoraConfig::new(Targeting::names(&["l"])).with_r(2).with_use_dora(true)).unwrap();
    assert_close(&values(&m.l.forward(x)), &before, 1e-6, "dora at init");
}

#[test]
fn ia3_scales_input_of_feedforward_and_output_otherwise() {
    let base = linear::<Nd>(D_IN, D_OUT, 31);
    let (w, bias) = (values(&base.weight.val()), values(&base.bias.as_ref().unwrap().val()));
    let x = tensor::<Nd, 2>([N, D_IN], 32);
    let xv = values(&x);

    let l_in = tensor::<Nd, 1>([D_IN], 33);
    let ff = Ia3Linear::new(base.clone())
        .with_adapter("f", Ia3 { scale: burn::module::Param::from_tensor(l_in.clone()), feedforward: true })
        .unwrap();
    let scaled: Vec<f32> = xv.iter().enumerate().map(|(k, v)| v * values(&l_in)[k % D_IN]).collect();
    assert_close(&values(&ff.forward(x.clone())), &host_linear(&scaled, &w, &bias), 1e-6, "ia3 ff");

    let l_out = tensor::<Nd, 1>([D_OUT], 34);
    let out = Ia3Linear::new(base)
        .with_adapter("o", Ia3 { scale: burn::module::Param::from_tensor(l_out.clone()), feedforward: false })
        .unwrap();
    let want: Vec<f32> = host_linear(&xv, &w, &bias).iter().enumerate().map(|(k, v)| v * values(&l_out)[k % D_OUT]).collect();
    assert_close(&values(&out.forward(x)), &want, 1e-6, "ia3 out");
}

#[test]
fn ia3_config_marks_feedforward_modules_and_starts_at_identity() {
    #[derive(burn::module::Module, Debug)]
    struct Two<B: burn::tensor::backend::Backend> {
        attn: Ia3Linear<B>,
        ff: Ia3Linear<B>,
    }
    peft_core::adaptable!(Two { attn, ff });
    let mut m = Two::<Nd> { attn: Tuned::new(linear(D_IN, D_IN, 1)), ff: Tuned::new(linear(D_IN, D_OUT, 2)) };
    let config = Ia3Config::new(Targeting::names(&["attn", "ff"])).with_feedforward_modules(peft_core::TargetModules::names(&["ff"]));
    let x = tensor::<Nd, 2>([N, D_IN], 3);
    let before = values(&m.ff.forward(m.attn.forward(x.clone())));
    m.add_adapter("ia3", &config).unwrap();
    assert!(m.ff.adapter("ia3").unwrap().feedforward);
    assert!(!m.attn.adapter("ia3").unwrap().feedforward);
    assert_eq!(m.ff.adapter("ia3").unwrap().scale.dims(), [D_IN]);
    assert_eq!(values(&m.ff.forward(m.attn.forward(x))), before);
}

#[test]
fn default_init_is_kaiming_uniform_a_and_zero_b() {
    let mut m = SingleLayer::<Nd> { l: LoraLinear::new(linear(64, 32, 1)) };
    m.add_adapter("x", &LoraConfig::new(Targeting::names(&["l"])).with_r(16)).unwrap();
    let lora = m.l.adapter("x").unwrap();
    let a = values(&lora.a.val());
    let bound = 1.0 / (64f32).sqrt();
    assert!(a.iter().all(|v| v.abs() <= bound));
    // Uniform(-b, b) has variance b²/3.
    let var = a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32;
    assert!((var - bound * bound / 3.0).abs() < 0.15 * bound * bound / 3.0, "variance {var}");
    assert!(values(&lora.b.val()).iter().all(|v| *v == 0.0));
}

#[test]
fn gaussian_init_has_std_one_over_r() {
    let mut m = SingleLayer::<Nd> { l: LoraLinear::new(linear(256, 32, 1)) };
    m.add_adapter("x", &LoraConfig::new(Targeting::names(&["l"])).with_r(8).with_init(LoraInit::Gaussian)).unwrap();
    let a = values(&m.l.adapter("x").unwrap().a.val());
    let std = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
    assert!((std - 0.125).abs() < 0.01, "std {std}");
    assert!(values(&m.l.adapter("x").unwrap().b.val()).iter().all(|v| *v == 0.0));
}

#[test]
fn pissa_keeps_the_model_and_takes_the_principal_subspace() {
    let mut m = SingleLayer::<Nd> { l: LoraLinear::new(linear(D_IN, D_OUT, 41)) };
    let w = values(&m.l.base.weight.val());
    let x = tensor::<Nd, 2>([N, D_IN], 42);
    let before = values(&m.l.forward(x.clone()));
    m.add_adapter("p", &LoraConfig::new(Targeting::names(&["l"])).with_r(2).with_alpha(4.0).with_init(LoraInit::Pissa)).unwrap();
    assert_close(&values(&m.l.forward(x)), &before, 1e-5, "pissa forward at init");
    let lora = m.l.adapter("p").unwrap();
    let delta = values(&lora.delta_weight());
    let residual = values(&m.l.base.weight.val());
    let sum: Vec<f32> = residual.iter().zip(&delta).map(|(r, d)| r + d).collect();
    assert_close(&sum, &w, 1e-5, "residual + s·A·Nd = W");
    // The update is the best rank-2 approximation: its residual has the smallest singular values.
    let wf: Vec<f64> = w.iter().map(|v| *v as f64).collect();
    let (_, s, _) = peft_lora::svd(&wf, D_IN, D_OUT);
    let rf: Vec<f64> = residual.iter().map(|v| *v as f64).collect();
    let (_, rs, _) = peft_lora::svd(&rf, D_IN, D_OUT);
    assert!((rs[0] - s[2]).abs() < 1e-4, "{rs:?} vs {s:?}");
}

#[test]
fn embedding_lora_matches_closed_form() {
    use burn::nn::EmbeddingConfig;
    use peft_lora::LoraEmbedding;
    let base = EmbeddingConfig::new(10, 4).init::<Nd>(&dev()).no_grad();
    let table = values(&base.weight.val());
    let (a, b) = (tensor::<Nd, 2>([10, 3], 51), tensor::<Nd, 2>([3, 4], 52));
    let layer = LoraEmbedding::new(base).with_adapter("e", Lora::from_factors(a.clone(), b.clone(), 2.0).unwrap()).unwrap();
    let ids = Tensor::<Nd, 2, burn::tensor::Int>::from_data([[1, 7, 7], [0, 9, 3]], &dev());
    let got = values(&layer.forward(ids));
    let delta = matmul(&values(&a), &values(&b), 10, 3, 4);
    let want: Vec<f32> = [1, 7, 7, 0, 9, 3].iter().flat_map(|&t| (0..4).map(move |j| (t, j))).map(|(t, j)| table[t * 4 + j] + 2.0 * delta[t * 4 + j]).collect();
    assert_close(&got, &want, 1e-6, "embedding lora");
}

#[test]
fn embedding_default_init_is_zero_a_normal_b() {
    use burn::nn::EmbeddingConfig;
    use peft_lora::LoraEmbedding;
    #[derive(burn::module::Module, Debug)]
    struct E<B: burn::tensor::backend::Backend> {
        embed: LoraEmbedding<B>,
    }
    peft_core::adaptable!(E { embed });
    // B has r·d = 16·400 samples: the std estimate's own spread (~0.009) is far below the tolerance.
    let mut m = E::<Nd> { embed: Tuned::new(EmbeddingConfig::new(50, 400).init(&dev())) };
    m.add_adapter("e", &LoraConfig::new(Targeting::names(&["embed"])).with_r(16)).unwrap();
    let lora = m.embed.adapter("e").unwrap();
    assert!(values(&lora.a.val()).iter().all(|v| *v == 0.0));
    let b = values(&lora.b.val());
    let std = (b.iter().map(|v| v * v).sum::<f32>() / b.len() as f32).sqrt();
    assert!((std - 1.0).abs() < 0.15, "std {std}");
}

#[test]
fn conv_lora_equals_convolution_with_the_merged_kernel() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use peft_lora::LoraConv;
    #[derive(burn::module::Module, Debug)]
    struct C<B: burn::tensor::backend::Backend> {
        conv: LoraConv<B>,
    }
    peft_core::adaptable!(C { conv });
    let base = Conv2dConfig::new([3, 5], [3, 3]).with_padding(PaddingConfig2d::Same).init::<Nd>(&dev());
    let mut m = C { conv: Tuned::new(base) };
    // Burn initializes parameters lazily: take the reference kernel from the wrapped layer.
    let base = m.conv.base.clone();
    m.add_adapter("c", &LoraConfig::new(Targeting::names(&["conv"])).with_r(2).with_alpha(3.0)).unwrap();
    m.conv.adapter_mut("c").unwrap().b = burn::module::Param::from_tensor(tensor([5, 2, 1, 1], 61));
    let lora = m.conv.adapter("c").unwrap().clone();
    let x = tensor::<Nd, 4>([2, 3, 6, 6], 62);
    let y = values(&m.conv.forward(x.clone()));
    // Closed form of the update: ΔW[o, i, kh, kw] = s·Σ_r Nd[o, r]·A[r, i, kh, kw].
    let (a, b, s) = (values(&lora.a.val()), values(&lora.b.val()), lora.scaling as f32);
    let delta = matmul(&b, &a, 5, 2, 27);
    let mut kernel = base.clone();
    let w: Vec<f32> = values(&base.weight.val()).iter().zip(&delta).map(|(w, d)| w + s * d).collect();
    kernel.weight = burn::module::Param::from_tensor(Tensor::from_data(burn::tensor::TensorData::new(w, [5, 3, 3, 3]), &dev()));
    assert_close(&y, &values(&kernel.forward(x)), 1e-5, "conv lora");
}

