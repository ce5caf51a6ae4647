//! peft-quant
