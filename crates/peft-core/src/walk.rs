//! Walking a user's model to reach every [`Tuned`] layer by module path: the [`Adaptable`] trait
//! that models implement (by hand or with [`adaptable!`](crate::adaptable)), and the runner of
//! per-layer operations that the model-level operations are built from.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;

use crate::{LayerKind, PeftError, Result, Tuned, Tuner};

/// Something that may contain [`Tuned`] layers: a layer, a block, a whole model.
///
/// Implemented for Burn's `Linear`, `Embedding` and `Conv2d`, for [`Tuned`], `Vec` and `Option`.
/// Implement it for your own modules with [`adaptable!`](crate::adaptable).
pub trait Adaptable<B: Backend>: Module<B> + burn::module::ModuleDisplay {
    /// The kind of layer this is, for targeting.
    fn kind(&self) -> LayerKind {
        LayerKind::Other
    }

    /// The width of the layer's output, when it has one (used by adapters that need it).
    fn output_features(&self) -> Option<usize> {
        None
    }

    /// The device adapters built on this layer go to: that of its first parameter by default.
    fn device(&self) -> Option<B::Device> {
        self.devices().into_iter().next()
    }

    /// Calls `visitor` on every [`Tuned`] layer below `self`, `path` being `self`'s module path.
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        let _ = (path, visitor);
    }
}

/// A function over every [`Tuned`] layer of a model.
pub trait TunedVisitor<B: Backend> {
    /// Called once per wrapped layer with its module path.
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>);
}

/// `parent.child`, or `child` at the root.
pub fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

impl<B: Backend> Adaptable<B> for Linear<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }
    fn output_features(&self) -> Option<usize> {
        Some(self.weight.dims()[1])
    }
}

crate::adaptable!(Embedding: LayerKind::Embedding);

impl<B: Backend> Adaptable<B> for LayerNorm<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Residual
    }
    fn output_features(&self) -> Option<usize> {
        Some(self.gamma.dims()[0])
    }
}
crate::adaptable!(Conv2d: LayerKind::Conv2d);

impl<B: Backend, M: Adaptable<B>> Adaptable<B> for Vec<M> {
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_tuned(&join_path(path, &i.to_string()), visitor);
        }
    }
}

impl<B: Backend, M: Adaptable<B>> Adaptable<B> for Option<M> {
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        if let Some(m) = self {
            m.visit_tuned(path, visitor);
        }
    }
}

impl<B: Backend, L: Adaptable<B>, T: Tuner<B, L>> Adaptable<B> for Tuned<B, L, T> {
    fn kind(&self) -> LayerKind {
        self.base.kind()
    }

    fn output_features(&self) -> Option<usize> {
        self.base.output_features()
    }

    fn device(&self) -> Option<B::Device> {
        self.base.device()
    }

    /// Visits this layer, then any wrapper nested inside it under the same path.
    fn visit_tuned<V: TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
        visitor.visit(path, self);
        self.base.visit_tuned(path, visitor);
    }
}

impl<B: Backend> Adaptable<B> for crate::ResidualAdd<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Residual
    }
    fn output_features(&self) -> Option<usize> {
        Some(self.width)
    }
    fn device(&self) -> Option<B::Device> {
        Some(self.home.clone())
    }
}

/// Implements [`Adaptable`] for a module struct generic over `B`, listing the fields that
/// contain tuned layers.
///
/// ```ignore
/// peft_core::adaptable!(Block { attention, feed_forward });
/// // A sub-layer that bottleneck adapters wrap also says which field gives its output width:
/// peft_core::adaptable!(FeedForward { up, down }, output = down);
/// // A module generic over the method of its linear layers:
/// peft_core::adaptable!(Attention<T: MyLinearAdapter<B>> { q_proj, v_proj });
/// ```
#[macro_export]
macro_rules! adaptable {
    ($name:ident $(<$t:ident: $bound:path>)? { $($field:ident),* $(,)? } $(, output = $out:ident)?) => {
        impl<B: burn::tensor::backend::Backend $(, $t: $bound)?> $crate::Adaptable<B> for $name<B $(, $t)?> {
            $(
                fn output_features(&self) -> Option<usize> {
                    $crate::Adaptable::<B>::output_features(&self.$out)
                }
            )?
            fn visit_tuned<V: $crate::TunedVisitor<B>>(&mut self, path: &str, visitor: &mut V) {
                $( $crate::Adaptable::<B>::visit_tuned(&mut self.$field, &$crate::join_path(path, stringify!($field)), visitor); )*
            }
        }
    };
    ($name:ident: $kind:expr) => {
        impl<B: burn::tensor::backend::Backend> $crate::Adaptable<B> for $name<B> {
            fn kind(&self) -> $crate::LayerKind {
                $kind
            }
        }
    };
}

/// A closure-like visitor: applies `f` to every tuned layer and keeps the first error.
struct Each<F> {
    f: F,
    error: Option<PeftError>,
}

/// The operation [`Each`] applies, generic over the layer and method types.
pub(crate) trait LayerOp<B: Backend> {
    fn apply<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) -> Result<()>;
}

impl<B: Backend, F: LayerOp<B>> TunedVisitor<B> for Each<F> {
    fn visit<L: Adaptable<B>, T: Tuner<B, L>>(&mut self, path: &str, layer: &mut Tuned<B, L, T>) {
        if self.error.is_none()
            && let Err(e) = self.f.apply(path, layer)
        {
            self.error = Some(e);
        }
    }
}

/// Applies `f` to every tuned layer of `model`, all or nothing: on the first error the model is
/// left as it was.
pub(crate) fn for_each<B: Backend, M: Adaptable<B>, F: LayerOp<B>>(model: &mut M, f: F) -> Result<F> {
    let mut work = model.clone();
    let mut each = Each { f, error: None };
    work.visit_tuned("", &mut each);
    match each.error {
        Some(e) => Err(e),
        None => {
            *model = work;
            Ok(each.f)
        }
    }
}
