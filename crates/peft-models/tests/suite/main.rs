//! The reference models' integration tests, one test binary (one build of the models' generic code).

mod adapterhub;
mod combination;
mod decoding;
mod example_adapters;
mod example_prefixes;
mod four_bit;
mod hf_parity;
mod hostile;
mod mixed;
mod ptuning_lstm;
mod seq_cls;
