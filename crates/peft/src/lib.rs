//! peft
