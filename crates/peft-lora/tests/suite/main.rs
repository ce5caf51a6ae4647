//! LoRA's integration tests on the CPU backend, one test binary (the device tests, built with
//! other features, are their own).

#[path = "../common/mod.rs"]
mod common;
mod formulas;
mod gating;
mod lifecycle;
mod qlora;
mod transfer;
