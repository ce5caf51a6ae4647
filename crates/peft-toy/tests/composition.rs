//! LoRA, a bottleneck adapter and a prefix on one model at once, through the one trait.
use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use peft_adapter::BottleneckConfig;
use peft_core::{PeftModel, Targeting, TrainMode, TrainableReport, list_params};
use peft_lora::LoraConfig;
use peft_ptuning::PrefixConfig;
use peft_toy::synthetic::{Domain, SEQ_LEN, VOCAB, batch, dataset};
use peft_toy::{TinyTransformer, TinyTransformerConfig};

type Nd = NdArray;
type Ad = Autodiff<Nd>;

fn model<B: burn::tensor::backend::Backend>() -> TinyTransformer<B> {
    let device = Default::default();
    B::seed(&device, 7);
    // Initialize every parameter now (Burn is lazy), so clones share the same weights.
    TinyTransformerConfig::new(VOCAB, SEQ_LEN, 2).with_d_model(16).with_d_ff(32).with_n_heads(2).init::<B>(&device).no_grad()
}

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn compose<B: burn::tensor::backend::Backend>(m: &mut TinyTransformer<B>) {
    m.add_adapter("lora", &LoraConfig::new(Targeting::names(&["q", "v"])).with_r(2)).unwrap();
    m.add_adapter("bn", &BottleneckConfig::parallel(Targeting::names(&["ffn"]))).unwrap();
    m.add_adapter("prefix", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3)).unwrap();
}

#[test]
fn three_methods_compose_on_one_model_and_disable_to_the_exact_base() {
    let base = model::<Nd>();
    let (tokens, _) = batch::<Nd>(&dataset(Domain::General, 4, 1), &Default::default());
    let want = values(base.forward(tokens.clone()));
    let mut m = base.clone();
    compose(&mut m);
    let paths: Vec<String> = m.tuned_layers().into_iter().filter(|l| !l.adapters.is_empty()).map(|l| l.path).collect();
    assert_eq!(paths, [
        "blocks.0.attn.q", "blocks.0.attn.v", "blocks.0.attn.kv", "blocks.0.ffn",
        "blocks.1.attn.q", "blocks.1.attn.v", "blocks.1.attn.kv", "blocks.1.ffn"
    ]);
    // The prefix changes the output at once (LoRA and the adapter start as identities).
    assert_ne!(values(m.forward(tokens.clone())), want);
    m.disable_adapters().unwrap();
    assert_eq!(values(m.forward(tokens)), want, "disabled is not bit-identical to the base");
}

#[test]
fn gradients_reach_exactly_the_three_methods_and_the_saved_head() {
    let mut m = model::<Ad>();
    compose(&mut m);
    let mode = TrainMode::adapters_and(&["head"]);
    let m = peft_core::set_trainable(m, &mode);
    let (tokens, labels) = batch::<Ad>(&dataset(Domain::General, 8, 2), &Default::default());
    let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&Default::default()).forward(m.forward(tokens), labels);
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let params = list_params(&m);
    let trainable: Vec<_> = params.iter().filter(|p| mode.trains_param(p)).collect();
    // Every trainable parameter that influences the loss gets a gradient, and nothing else does.
    struct Ids(Vec<(burn::module::ParamId, usize)>);
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push((p.id, D));
        }
    }
    let mut ids = Ids(Vec::new());
    m.visit(&mut ids);
    let mut with_grad = 0;
    for ((id, d), info) in ids.0.iter().zip(&params) {
        let has = match d {
            1 => grads.get::<Nd, 1>(*id).is_some(),
            2 => grads.get::<Nd, 2>(*id).is_some(),
            3 => grads.get::<Nd, 3>(*id).is_some(),
            _ => grads.get::<Nd, 4>(*id).is_some(),
        };
        assert_eq!(has, mode.trains_param(info), "{}: gradient {has}", info.path);
        with_grad += usize::from(has);
    }
    assert_eq!(with_grad, trainable.len());
    assert!(trainable.iter().any(|p| p.path.contains("kv.adapters")));
    assert!(trainable.iter().any(|p| p.path.contains("ffn.adapters")));
    assert!(trainable.iter().any(|p| p.path.ends_with("q.adapters.0.a")));
    let report = TrainableReport::new(&m, &mode);
    assert!(report.trainable < report.total / 2, "{report}");
}

#[test]
fn merging_names_the_adapters_that_cannot_merge_and_merges_the_rest_on_request() {
    let mut m = model::<Nd>();
    compose(&mut m);
    let (tokens, _) = batch::<Nd>(&dataset(Domain::General, 4, 1), &Default::default());
    let before = values(m.forward(tokens.clone()));
    let err = m.merge_adapters(true).unwrap_err().to_string();
    assert!(err.contains("adapter `prefix` (PREFIX_TUNING at `blocks.0.attn.kv`)"), "{err}");
    assert!(err.contains("set_active_adapters") && err.contains("merge_mergeable_adapters"), "{err}");
    m.merge_mergeable_adapters(true).unwrap();
    let merged: Vec<String> = m.tuned_layers().into_iter().filter(|l| l.kind == peft_core::LayerKind::Linear).map(|l| l.path).collect();
    assert!(m.blocks[0].attn.q.is_merged() && !m.blocks[0].ffn.is_merged() && !m.blocks[0].attn.kv.is_merged(), "{merged:?}");
    let after = values(m.forward(tokens));
    let drift = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(drift < 1e-5, "merging LoRA changed the output by {drift}");
}
