//! The bytes of unfinished request frames across all connections, bounded: clients that
//! send large frames slowly, or stop halfway, cannot together take the agent's memory.
//! Each connection charges what its unfinished frame holds; one whose charge would pass the
//! budget is refused and closed.

use std::sync::atomic::{AtomicU64, Ordering};

/// The agent-wide budget (`[agent] max_unfinished_bytes`).
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// One connection's share of the budget.
#[derive(Debug)]
pub struct Share<'a> {
    budget: &'a Budget,
    charged: u64,
}

impl<'a> Share<'a> {
    pub fn new(budget: &'a Budget) -> Share<'a> {
        Share { budget, charged: 0 }
    }

    /// Sets this connection's charge to `bytes`. False when that would pass the budget
    /// (the charge stays as it was).
    pub fn set(&mut self, bytes: u64) -> bool {
        if bytes <= self.charged {
            self.budget
                .used
                .fetch_sub(self.charged - bytes, Ordering::SeqCst);
            self.charged = bytes;
            return true;
        }
        let more = bytes - self.charged;
        let before = self.budget.used.fetch_add(more, Ordering::SeqCst);
        if before + more > self.budget.limit {
            self.budget.used.fetch_sub(more, Ordering::SeqCst);
            return false;
        }
        self.charged = bytes;
        true
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.charged, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_and_give_back_on_drop() {
        let b = Budget::new(100);
        let mut a = Share::new(&b);
        let mut c = Share::new(&b);
        assert!(a.set(60));
        assert!(!c.set(50), "60 + 50 passes 100");
        assert!(c.set(40));
        assert!(a.set(10), "shrinking always works");
        assert!(c.set(90));
        drop(c);
        assert!(a.set(100));
    }
}
