//! Prefixes prepend learned keys and values at an attention's key/value site.
use burn::backend::NdArray;
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use peft_core::{PeftModel, Targeting, Tuned};
use peft_ptuning::{KvSite, PrefixConfig, PrefixKv};

type TB = NdArray;

#[derive(Module, Debug)]
struct Attn<B: burn::tensor::backend::Backend> {
    kv: PrefixKv<B>,
}
peft_core::adaptable!(Attn { kv });

#[test]
fn prefix_is_prepended_per_head_for_every_sequence() {
    let device = Default::default();
    let mut attn = Attn::<TB> { kv: Tuned::new(KvSite { kv_heads: 2, head_dim: 3 }) };
    let k = Tensor::<TB, 4>::random([4, 2, 5, 3], Distribution::Default, &device);
    let v = Tensor::<TB, 4>::random([4, 2, 5, 3], Distribution::Default, &device);
    let (k0, v0) = attn.kv.forward((k.clone(), v.clone()));
    assert_eq!(k0.into_data(), k.clone().into_data(), "no prefix must be the identity");
    assert_eq!(v0.into_data(), v.clone().into_data());

    attn.add_adapter("p", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3)).unwrap();
    let prefix = attn.kv.adapter("p").unwrap().clone();
    assert_eq!(prefix.keys.dims(), [2, 3, 3]);
    let (k1, v1) = attn.kv.forward((k.clone(), v.clone()));
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
