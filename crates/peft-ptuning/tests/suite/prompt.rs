//! Prompts put learned virtual tokens before the embedded input at a model's prompt site.
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use peft_core::{PeftError, PeftModel, Targeting, Tuned};
use peft_ptuning::{PromptInput, PromptSite, PromptTuningConfig, virtual_tokens};

type TB = NdArray;

#[derive(Module, Debug)]
struct Inputs<B: burn::tensor::backend::Backend> {
    prompt: PromptInput<B>,
}
peft_core::adaptable!(Inputs { prompt });

fn config(n: usize) -> PromptTuningConfig {
    PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(n)
}

#[test]
fn a_prompt_goes_before_every_row_and_disabled_is_the_identity() {
    let device = Default::default();
    let mut inputs = Inputs::<TB> { prompt: Tuned::new(PromptSite { token_dim: 3 }) };
    let x = Tensor::<TB, 3>::random([4, 5, 3], Distribution::Default, &device);
    assert_eq!(inputs.prompt.forward(x.clone()).into_data(), x.clone().into_data(), "no prompt must be the identity");
    assert!(virtual_tokens(&inputs.prompt).is_none());

    inputs.add_adapter("p", &config(2)).unwrap();
    let prompt = inputs.prompt.adapter("p").unwrap().embeddings.val();
    assert_eq!(prompt.dims(), [2, 3]);
    let out = inputs.prompt.forward(x.clone());
    assert_eq!(out.dims(), [4, 7, 3]);
    for b in 0..4 {
        assert_eq!(out.clone().slice([b..b + 1, 0..2, 0..3]).reshape([2, 3]).into_data(), prompt.clone().into_data());
    }
    assert_eq!(out.slice([0..4, 2..7, 0..3]).into_data(), x.clone().into_data());
    // Two live prompts: both, in order.
    inputs.add_adapter("q", &config(1)).unwrap();
    inputs.set_active_adapters(&["p", "q"]).unwrap();
    assert_eq!(virtual_tokens(&inputs.prompt).unwrap().dims(), [3, 3]);
    inputs.disable_adapters().unwrap();
    assert_eq!(inputs.prompt.forward(x.clone()).into_data(), x.into_data());
    assert!(matches!(inputs.add_adapter("r", &config(0)), Err(PeftError::InvalidConfig(_))));
    assert!(matches!(inputs.merge_adapters(true), Err(PeftError::NotMergeable { .. })));
}

#[test]
fn only_the_virtual_tokens_get_a_gradient() {
    type AB = Autodiff<NdArray>;
    let device = Default::default();
    let mut inputs = Inputs::<AB> { prompt: Tuned::new(PromptSite { token_dim: 3 }) };
    inputs.add_adapter("p", &config(2)).unwrap();
    let x = Tensor::<AB, 3>::random([2, 4, 3], Distribution::Default, &device);
    // d/dP Σ out² = 2·P for each of the 2 rows: 4·P.
    let grads = inputs.prompt.forward(x.clone()).powi_scalar(2).sum().backward();
    let prompt = &inputs.prompt.adapter("p").unwrap().embeddings;
    let grad = prompt.grad(&grads).expect("the prompt has a gradient");
    let want = prompt.val().inner().mul_scalar(4.0);
    assert!((grad - want).abs().max().into_scalar() < 1e-5);
    assert!(x.grad(&grads).is_none(), "the input is not a parameter");
}

#[test]
fn p_tuning_puts_the_embeddings_through_its_mlp() {
    use burn::tensor::activation::relu;
    use peft_ptuning::PromptEncoderConfig;
    let device = Default::default();
    let mut inputs = Inputs::<TB> { prompt: Tuned::new(PromptSite { token_dim: 4 }) };
    let p_tuning = config(3).with_encoder(Some(PromptEncoderConfig::new().with_hidden_size(Some(6))));
    assert_eq!(peft_core::MethodConfig::peft_type(&p_tuning), "P_TUNING");
    inputs.add_adapter("p", &p_tuning).unwrap();
    let p = inputs.prompt.adapter("p").unwrap();
    let Some(peft_ptuning::PromptEncoder::Mlp(mlp)) = p.encoder.as_ref() else { panic!("an MLP encoder") };
    assert_eq!((mlp.input.weight.dims(), mlp.hidden.weight.dims(), mlp.output.weight.dims()), ([4, 6], [6, 6], [6, 4]));
    // By hand: x·W + b per layer, ReLU between.
    let layer = |x: Tensor<TB, 2>, l: &burn::nn::Linear<TB>| x.matmul(l.weight.val()) + l.bias.as_ref().unwrap().val().unsqueeze::<2>();
    let want = layer(relu(layer(relu(layer(p.embeddings.val(), &mlp.input)), &mlp.hidden)), &mlp.output);
    let x = Tensor::<TB, 3>::zeros([2, 1, 4], &device);
    let got = inputs.prompt.forward(x).slice([0..1, 0..3, 0..4]).reshape([3, 4]);
    assert!((got - want).abs().max().into_scalar() < 1e-6);
    assert!(matches!(inputs.add_adapter("q", &config(1).with_encoder(Some(PromptEncoderConfig::new().with_hidden_size(Some(0))))), Err(PeftError::InvalidConfig(_))));
}
