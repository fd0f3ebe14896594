//! What a sink could not write yet, kept for the next attempt: bounded in
//! bytes, shedding the oldest items (and counting them) when an outage
//! outlasts the room, so a full disk costs memory up to the bound and
//! then only the oldest unwritten records.

use std::collections::VecDeque;

pub struct Backlog<T> {
    items: VecDeque<T>,
    bytes: usize,
    max_bytes: usize,
    size: fn(&T) -> usize,
    /// Items dropped to stay within `max_bytes`.
    pub shed: u64,
}

impl<T> Backlog<T> {
    pub fn new(max_bytes: usize, size: fn(&T) -> usize) -> Backlog<T> {
        Backlog {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
            size,
            shed: 0,
        }
    }

    /// Queues `item` behind the others; sheds the oldest while over the
    /// bound, never the newest and never the front when `front_busy` (it
    /// is partly written).
    pub fn push(&mut self, item: T, front_busy: bool) {
        self.bytes += (self.size)(&item);
        self.items.push_back(item);
        let keep = if front_busy { 1 } else { 0 };
        while self.bytes > self.max_bytes && self.items.len() > keep + 1 {
            if let Some(old) = self.items.remove(keep) {
                self.bytes -= (self.size)(&old);
                self.shed += 1;
            }
        }
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.bytes -= (self.size)(&item);
        Some(item)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_and_are_counted() {
        let mut b: Backlog<Vec<u8>> = Backlog::new(10, Vec::len);
        for i in 0..5u8 {
            b.push(vec![i; 4], false);
        }
        assert_eq!(b.bytes(), 8);
        assert_eq!(b.shed, 3);
        assert_eq!(b.pop_front(), Some(vec![3; 4]));
        // A partly written front stays; the one behind it goes.
        let mut b: Backlog<Vec<u8>> = Backlog::new(10, Vec::len);
        b.push(vec![0; 6], false);
        b.push(vec![1; 6], true);
        assert_eq!(b.len(), 2, "nothing behind the busy front to shed yet");
        b.push(vec![2; 2], true);
        assert_eq!(b.front(), Some(&vec![0; 6]));
        assert_eq!(b.iter().nth(1), Some(&vec![2; 2]));
        assert_eq!(b.shed, 1);
        // One item larger than the bound is still kept: it is the newest.
        let mut b: Backlog<Vec<u8>> = Backlog::new(3, Vec::len);
        b.push(vec![9; 8], false);
        assert_eq!(b.len(), 1);
    }
}
