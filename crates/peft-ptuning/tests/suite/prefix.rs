//! Prefixes prepend learned keys and values at an attention's key/value site.
use burn::backend::NdArray;
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use peft_core::{PeftModel, Targeting, Tuned};
use peft_ptuning::{AttentionKv, KvSite, PrefixConfig, PrefixKv};

type TB = NdArray;

#[derive(Module, Debug)]
struct Attn<B: burn::tensor::backend::Backend> {
    kv: PrefixKv<B>,
}
peft_core::adaptable!(Attn { kv });

#[test]
fn prefix_is_prepended_per_head_for_every_sequence() {
    let device = Default::default();
    let mut attn = Attn::<TB> { kv: Tuned::new(KvSite { kv_heads: 2, head_dim: 3, input_dim: 4 }) };
    let k = Tensor::<TB, 4>::random([4, 2, 5, 3], Distribution::Default, &device);
    let v = Tensor::<TB, 4>::random([4, 2, 5, 3], Distribution::Default, &device);
    let x = Tensor::<TB, 3>::random([4, 5, 4], Distribution::Default, &device);
    let (k0, v0) = attn.kv.forward(AttentionKv::new(k.clone(), v.clone(), x.clone()));
    assert_eq!(k0.into_data(), k.clone().into_data(), "no prefix must be the identity");
    assert_eq!(v0.into_data(), v.clone().into_data());

    attn.add_adapter("p", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3)).unwrap();
    let prefix = attn.kv.adapter("p").unwrap().clone();
    assert_eq!(prefix.keys.dims(), [2, 3, 3]);
    let (k1, v1) = attn.kv.forward(AttentionKv::new(k.clone(), v.clone(), x.clone()));
    assert_eq!(k1.dims(), [4, 2, 8, 3]);
    for b in 0..4 {
        let head = k1.clone().slice([b..b + 1, 0..2, 0..3, 0..3]).reshape([2, 3, 3]);
        assert_eq!(head.into_data(), prefix.keys.val().into_data());
        let vals = v1.clone().slice([b..b + 1, 0..2, 0..3, 0..3]).reshape([2, 3, 3]);
        assert_eq!(vals.into_data(), prefix.values.val().into_data());
    }
    assert_eq!(k1.slice([0..4, 0..2, 3..8, 0..3]).into_data(), k.into_data());
    assert!(matches!(
        attn.add_adapter("q", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(0)),
        Err(peft_core::PeftError::InvalidConfig(_))
    ));
}

#[test]
fn a_projected_prefix_splits_the_mlp_output_as_peft_does() {
    use peft_ptuning::{PrefixProjectionConfig, PrefixProjectionSite, ProjectedPrefix, projected_keys_values};

    #[derive(Module, Debug)]
    struct Model<B: burn::tensor::backend::Backend> {
        prefix_projection: ProjectedPrefix<B>,
    }
    peft_core::adaptable!(Model { prefix_projection });

    let mut m = Model::<TB> { prefix_projection: Tuned::new(PrefixProjectionSite { layers: 2, kv_heads: 2, head_dim: 3 }) };
    assert!(projected_keys_values(&m.prefix_projection).is_none());
    m.add_adapter("p", &PrefixProjectionConfig::new(Targeting::names(&["prefix_projection"])).with_num_virtual_tokens(4).with_encoder_hidden_size(Some(5))).unwrap();
    let p = m.prefix_projection.adapter("p").unwrap();
    // By hand: output(tanh(input(E))) [4, 2·2·6]; token t, layer l, part j (0 keys, 1 values),
    // head h, channel c is column (2l + j)·6 + h·3 + c.
    let e = p.embeddings.val().reshape([4, 6]);
    let hidden = (e.matmul(p.input.weight.val()) + p.input.bias.as_ref().unwrap().val().unsqueeze::<2>()).tanh();
    let projected = hidden.matmul(p.output.weight.val()) + p.output.bias.as_ref().unwrap().val().unsqueeze::<2>();
    assert_eq!(projected.dims(), [4, 24]);
    let values = projected.into_data().into_vec::<f32>().unwrap();
    let kv = projected_keys_values(&m.prefix_projection).unwrap();
    assert_eq!(kv.len(), 2);
    for (l, (k, v)) in kv.iter().enumerate() {
        assert_eq!(k.dims(), [1, 2, 4, 3]);
        for (j, part) in [k, v].into_iter().enumerate() {
            let got = part.clone().into_data().into_vec::<f32>().unwrap();
            for h in 0..2 {
                for t in 0..4 {
                    for c in 0..3 {
                        let want = values[t * 24 + (2 * l + j) * 6 + h * 3 + c];
                        assert!((got[(h * 4 + t) * 3 + c] - want).abs() < 1e-6);
                    }
                }
            }
        }
    }
    assert!(m.add_adapter("q", &PrefixProjectionConfig::new(Targeting::names(&["prefix_projection"])).with_num_virtual_tokens(0)).is_err());
}
