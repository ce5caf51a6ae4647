//! peft-adapter
