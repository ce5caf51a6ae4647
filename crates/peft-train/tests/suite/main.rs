//! The training workflow's integration tests, one test binary.

/// Burn's random generator is global to the process: two trainings at once would draw from it in
/// turns, and a run would no longer be reproducible; loading an adapter draws its initial values
/// too. Every test of this binary takes its turn.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod classification;
mod parity;
mod training;
