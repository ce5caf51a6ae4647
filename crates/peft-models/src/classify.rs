//! Sequence classification, as transformers' `*ForSequenceClassification`: a linear head over one
//! position of the final hidden states. Decoders (Llama, GPT-2) read each row's last real token
//! through `score` (no bias); BERT reads its pooled `[CLS]` state (`tanh(pooler(h[:, 0]))`)
//! through `classifier` (with bias). The head is a plain Burn `Linear` that trains in full, as
//! peft's `task_type = "SEQ_CLS"` lists it in `modules_to_save`.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use std::path::Path;

use burn::tensor::{Int, Tensor};
use peft_core::{PeftError, Result};
use peft_hf::{AdapterFolder, LoadedAdapter, adapterhub::is_adapterhub_folder, load_adapter};
use peft_quant::backend::QuantLinearBackend;

use crate::attention::{LinearAdapter, LinearTuner};
use crate::batch::TokenBatch;
use crate::HfModel;

/// The names transformers gives the head: `score` (decoders), `classifier` (encoders).
pub const CLASSIFIER_HEADS: [&str; 2] = ["score", "classifier"];

/// The standard deviation transformers draws a new head's weights from (`initializer_range`).
const HEAD_INIT_STD: f64 = 0.02;

/// A `d_model -> num_labels` head: weights drawn from N(0, 0.02) and a zero bias (as transformers
/// initializes a new head), or all zeros for a head a checkpoint fills.
pub fn classifier_head<B: Backend>(d_model: usize, num_labels: usize, bias: bool, random: bool, device: &B::Device) -> Linear<B> {
    let initializer = if random { Initializer::Normal { mean: 0.0, std: HEAD_INIT_STD } } else { Initializer::Zeros };
    let mut head = LinearConfig::new(d_model, num_labels).with_bias(bias).with_initializer(initializer).init(device);
    head.bias = head.bias.map(|b| Param::from_tensor(Tensor::zeros([num_labels], device)).set_require_grad(b.is_require_grad()));
    head
}

/// Each row's last real (non-padding) position of `hidden [batch, seq, d]`: `[batch, d]`.
fn last_real_token<B: Backend>(hidden: Tensor<B, 3>, segments: &Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [batch, seq, d] = hidden.dims();
    let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &hidden.device()).unsqueeze::<2>().expand([batch, seq]);
    let last = (positions * segments.clone().not_equal_elem(0).int()).argmax(1);
    hidden.gather(1, last.reshape([batch, 1, 1]).expand([batch, 1, d])).reshape([batch, d])
}

impl<B: Backend, T: LinearTuner<B>> HfModel<B, T> {
    /// What transformers calls this architecture's head: `score` or `classifier`.
    pub fn classifier_name(&self) -> &'static str {
        match self {
            Self::Llama(_) | Self::Gpt2(_) => CLASSIFIER_HEADS[0],
            Self::Bert(_) => CLASSIFIER_HEADS[1],
        }
    }

    /// Classes of the classification head, when the model has one.
    pub fn num_labels(&self) -> Option<usize> {
        self.classifier().map(|h| h.weight.dims()[1])
    }

    fn classifier(&self) -> Option<&Linear<B>> {
        match self {
            Self::Llama(m) => m.score.as_ref(),
            Self::Gpt2(m) => m.score.as_ref(),
            Self::Bert(m) => m.classifier.as_ref(),
        }
    }

    /// Model width.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Llama(m) => m.model.norm.gamma.dims()[0],
            Self::Gpt2(m) => m.transformer.ln_f.gamma.dims()[0],
            Self::Bert(m) => m.embeddings.layer_norm.gamma.dims()[0],
        }
    }

    /// The classes of a saved head of shape `[num_labels, hidden]` (HF's layout), checking its
    /// width.
    pub(crate) fn saved_head_labels(&self, shape: &[usize]) -> Result<usize> {
        match *shape {
            [labels, width] if width == self.hidden_size() => Ok(labels),
            _ => Err(PeftError::ShapeMismatch { name: format!("{}.weight", self.classifier_name()), expected: vec![shape.first().copied().unwrap_or(0), self.hidden_size()], actual: shape.to_vec() }),
        }
    }

    /// Puts a new classification head of `num_labels` classes on the model, replacing any head it
    /// had: random as transformers initializes one (seed the backend first), or zeros with
    /// `random = false` (for a checkpoint to fill). BERT classifies its pooled output, so it
    /// needs the pooler.
    pub fn set_classifier(&mut self, num_labels: usize, random: bool) -> Result<()> {
        if num_labels == 0 {
            return Err(PeftError::InvalidConfig("a classification head needs at least 1 label".into()));
        }
        let d = self.hidden_size();
        let device = match self {
            Self::Llama(m) => m.model.norm.gamma.device(),
            Self::Gpt2(m) => m.transformer.ln_f.gamma.device(),
            Self::Bert(m) => m.embeddings.layer_norm.gamma.device(),
        };
        match self {
            Self::Llama(m) => m.score = Some(classifier_head(d, num_labels, false, random, &device)),
            Self::Gpt2(m) => m.score = Some(classifier_head(d, num_labels, false, random, &device)),
            Self::Bert(m) if m.pooler.is_none() => return Err(PeftError::MissingTensor("pooler.dense.weight (BERT classifies its pooled output; this checkpoint has no pooler)".into())),
            Self::Bert(m) => m.classifier = Some(classifier_head(d, num_labels, true, random, &device)),
        }
        Ok(())
    }
}

impl<B: Backend> HfModel<B> {
    /// [`load_adapter`] for a model that may classify: a peft folder saved for sequence
    /// classification holds the head it trained (`modules_to_save`), which gets a place of its
    /// size on the model first. On error the model is unchanged.
    pub fn load_adapter_folder(&mut self, dir: &Path, name: &str) -> Result<LoadedAdapter> {
        let mut work = self.clone();
        if !is_adapterhub_folder(dir) {
            let head = format!("{}.weight", self.classifier_name());
            if let Some(saved) = AdapterFolder::read(dir)?.base.get(&head) {
                work.set_classifier(self.saved_head_labels(&saved.shape)?, false)?;
            }
        }
        let loaded = load_adapter(&mut work, dir, name)?;
        *self = work;
        Ok(loaded)
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> HfModel<B, T> {
    /// Class logits `[batch, num_labels]` of `batch` (one example per row; decoders take
    /// padding on either side, BERT on the right, as its tokenizer pads): the head over each
    /// row's last real token (Llama, GPT-2) or over the pooled output of the first (BERT). transformers' decoders pick the last token that is not the padding token, the same
    /// position unless an example ends with the padding token itself.
    pub fn classify(&self, batch: &TokenBatch<B>) -> Result<Tensor<B, 2>> {
        let head = self.classifier().ok_or_else(|| PeftError::InvalidConfig("the model has no classification head (add one with set_classifier, or train with task seq-cls)".into()))?;
        let pooled = match self {
            Self::Llama(m) => last_real_token(m.hidden_states(batch, None), &batch.segments),
            Self::Gpt2(m) => last_real_token(m.hidden_states(batch, None), &batch.segments),
            Self::Bert(m) => {
                let padding = batch.segments.clone().not_equal_elem(0).float();
                m.pooled(m.forward_padded(batch.tokens.clone(), Some(padding))).ok_or_else(|| PeftError::MissingTensor("pooler.dense.weight".into()))?
            }
        };
        Ok(head.forward(pooled))
    }
}
