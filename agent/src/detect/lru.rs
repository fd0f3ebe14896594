//! The bounded map every detector keeps its per-key state in: least
//! recently used keys are shed past the bound and counted, so a flood of
//! new keys (spoofed sources, random ports) cannot grow memory.

use std::hash::Hash;
use std::num::NonZeroUsize;

pub struct Bounded<K: Hash + Eq, V> {
    inner: ::lru::LruCache<K, V>,
    /// Keys evicted by the bound.
    pub shed: u64,
}

impl<K: Hash + Eq, V> Bounded<K, V> {
    pub fn new(cap: usize) -> Self {
        Bounded {
            inner: ::lru::LruCache::new(NonZeroUsize::new(cap.max(1)).unwrap_or(NonZeroUsize::MIN)),
            shed: 0,
        }
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.inner.get_mut(k)
    }

    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        // Full first: the key is hashed only when a miss would evict.
        if self.inner.len() == self.inner.cap().get() && !self.inner.contains(&k) {
            self.shed += 1;
        }
        self.inner.get_or_insert_mut(k, f)
    }

    pub fn put(&mut self, k: K, v: V) {
        // Full first: the key is hashed only when a miss would evict.
        if self.inner.len() == self.inner.cap().get() && !self.inner.contains(&k) {
            self.shed += 1;
        }
        self.inner.put(k, v);
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.inner.cap().get()
    }
}
