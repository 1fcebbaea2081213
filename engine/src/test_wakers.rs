//! A waker that counts its wakes, for the unit tests of the crate's wait queues.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

#[derive(Default)]
pub struct CountWakes(AtomicUsize);

impl CountWakes {
    /// A counter, and a waker that adds to it.
    pub fn waker() -> (Arc<CountWakes>, Waker) {
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        (wakes, waker)
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}
