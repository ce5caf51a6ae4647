//! Prefix and prompt tuning's integration tests, one test binary.

mod prefix;
mod prefix_gating;
mod prompt;
