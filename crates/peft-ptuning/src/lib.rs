//! peft-ptuning
