//! The 4-bit linear layer: forward, gradients through the custom backward, bnb weights, memory.
use burn::backend::{Autodiff, NdArray};
use burn::module::{Param, ParamId};
use burn::nn::LinearConfig;
use burn::tensor::{Distribution, Tensor, TensorData};
use peft_core::checkpoint::{parse, to_f32};
use peft_quant::{QLinear, QuantConfig, QuantType, Quantized4bit};

type Nd = NdArray;
type Ad = Autodiff<Nd>;

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn linear<B: burn::tensor::backend::Backend>(d_in: usize, d_out: usize) -> burn::nn::Linear<B> {
    let device = Default::default();
    let mut l = LinearConfig::new(d_in, d_out).init::<B>(&device);
    l.weight = Param::initialized(ParamId::new(), Tensor::random([d_in, d_out], Distribution::Normal(0.0, 0.5), &device));
    l.bias = Some(Param::initialized(ParamId::new(), Tensor::random([d_out], Distribution::Normal(0.0, 0.5), &device)));
    l
}

#[test]
fn forward_equals_the_dense_layer_with_the_dequantized_weight() {
    for (d_in, d_out, blocksize, qt) in [(40, 24, 64, QuantType::Nf4), (33, 7, 32, QuantType::Fp4), (64, 64, 128, QuantType::Nf4)] {
        let base = linear::<Nd>(d_in, d_out);
        let q = QLinear::from_linear(&base, QuantConfig { quant_type: qt, blocksize, double_quant: true }).unwrap();
        let mut dense = base.clone();
        dense.weight = Param::initialized(ParamId::new(), q.dequantize());
        let x = Tensor::<Nd, 3>::random([2, 5, d_in], Distribution::Default, &Default::default());
        let (a, b) = (values(q.forward(x.clone())), values(dense.forward(x)));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{d_in}x{d_out}: {u} vs {v}");
        }
        // The quantization error itself stays within the block bound: half the widest gap of the
        // codebook (1/6 for FP4, 0.152 for NF4) times the block's absmax, plus what double
        // quantization moved that absmax by. The absmax element itself maps to code ±1, so the
        // dequantized block's largest magnitude is the stored absmax.
        let w = values(base.weight.val().transpose());
        let dq = values(q.dequantize().transpose());
        for (blk_w, blk_d) in w.chunks(blocksize).zip(dq.chunks(blocksize)) {
            let absmax = blk_w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let stored = blk_d.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let bound = absmax / 6.0 + (absmax - stored).abs() + 1e-6;
            for (x, y) in blk_w.iter().zip(blk_d) {
                assert!((x - y).abs() <= bound, "{x} vs {y} (absmax {absmax}, stored {stored})");
            }
        }
    }
}

#[test]
fn weights_written_by_bitsandbytes_dequantize_bit_exactly_on_the_device() {
    let bytes = include_bytes!("fixtures/bnb_4bit.safetensors");
    let st = parse(bytes, "fixture").unwrap();
    for case in ["c0", "c3", "c16", "c21"] {
        let q = Quantized4bit::read(&st, &format!("{case}.weight")).unwrap();
        let layer = QLinear::<Nd>::from_quantized(&q, None, &Default::default()).unwrap();
        let want = to_f32("dequant", &st.tensor(&format!("{case}.dequant")).unwrap()).unwrap();
        let got = values(layer.dequantize().transpose());
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{case}");
    }
}

#[test]
fn gradients_reach_the_input_through_the_custom_backward_and_match_the_dense_ones() {
    let base = linear::<Ad>(48, 20);
    let q = QLinear::from_linear(&base, QuantConfig::qlora()).unwrap();
    let device = Default::default();
    let x = Tensor::<Ad, 2>::random([6, 48], Distribution::Default, &device).require_grad();
    let y = q.forward(x.clone());
    let grads = (y.clone() * y).sum().backward();
    let gq = values(x.grad(&grads).unwrap());
    // The same product with the dense dequantized weight and Burn's own matmul backward.
    let w = Tensor::<Ad, 2>::from_data(q.dequantize().into_data(), &device);
    let x2 = Tensor::<Ad, 2>::from_data(x.to_data(), &device).require_grad();
    let y2 = x2.clone().matmul(w) + q.bias.clone().unwrap().unsqueeze_dim::<2>(0);
    let grads2 = (y2.clone() * y2).sum().backward();
    let gd = values(x2.grad(&grads2).unwrap());
    for (a, b) in gq.iter().zip(&gd) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn memory_accounting_four_bit_codes_and_scales_against_dense_f32() {
    let base = linear::<Nd>(256, 256);
    let q = QLinear::from_linear(&base, QuantConfig::qlora()).unwrap();
    let dense_bytes = 4 * (256 * 256 + 256);
    let ratio = q.device_bytes() as f64 / dense_bytes as f64;
    // 4 bits of codes + 32/64 bits of scale per weight: 4.5/32 = 0.1406, plus the bias.
    assert!(ratio < 0.145, "ratio {ratio}");
    assert_eq!(q.meta.nibbles_per_word, 16, "ndarray's i64 words hold 16 codes");
    let host = QuantConfig::qlora().bits_per_parameter();
    assert!((host - 4.127).abs() < 5e-4);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let data = vec![0.5f32; 64];
    let q = Quantized4bit::quantize("w", &data, &[64], "float32", QuantConfig::qlora()).unwrap();
    assert!(QLinear::<Nd>::from_quantized(&q, None, &Default::default()).is_err(), "1-D weight");
    let q = Quantized4bit::quantize("w", &data, &[8, 8], "float32", QuantConfig::qlora()).unwrap();
    assert!(QLinear::<Nd>::from_quantized(&q, Some(&[0.0; 3]), &Default::default()).is_err(), "bias length");
    let _ = TensorData::new(vec![0f32], [1]);
}
