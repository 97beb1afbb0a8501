//! The answers of the directory kept for `cache_ttl_secs`: found and not found alike, per
//! server and address; failures are not kept, so a server that comes back is asked at once.
//!
//! Owns: the time to live and the bound on entries. Must not touch: what an answer says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most answers kept; past it the expired go first, then the oldest.
pub const MAX_CACHED: usize = 4096;

/// An answer and when it was given.
type Kept<T> = (Instant, Option<Arc<T>>);

#[derive(Debug)]
pub struct Cache<T> {
    ttl: Duration,
    map: Mutex<HashMap<String, Kept<T>>>,
}

impl<T> Cache<T> {
    pub fn new(ttl: Duration) -> Cache<T> {
        Cache {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The answer kept for `key`: `Some(None)` is a kept "not found".
    pub fn get(&self, key: &str) -> Option<Option<Arc<T>>> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.map.lock().ok()?;
        let (at, v) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub fn put(&self, key: String, value: Option<Arc<T>>) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= MAX_CACHED && !map.contains_key(&key) {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= MAX_CACHED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_for_their_time_to_live() {
        let c = Cache::new(Duration::from_millis(50));
        c.put("a".into(), Some(Arc::new(1)));
        c.put("b".into(), None);
        assert_eq!(c.get("a").flatten().as_deref(), Some(&1));
        assert!(matches!(c.get("b"), Some(None)));
        assert!(c.get("c").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let c = Cache::new(Duration::ZERO);
        c.put("a".into(), Some(Arc::new(1)));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn the_cache_does_not_grow_past_its_bound() {
        let c = Cache::new(Duration::from_secs(60));
        for i in 0..MAX_CACHED + 10 {
            c.put(format!("k{i}"), Some(Arc::new(i)));
        }
        assert_eq!(c.len(), MAX_CACHED);
        assert!(c.get(&format!("k{}", MAX_CACHED + 9)).is_some());
    }
}
