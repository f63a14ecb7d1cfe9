//! Connection storage addressed by mio tokens that carry a generation.
//!
//! A slot is reused as soon as its connection closes, but a readiness event
//! or timer for the old connection may still be queued; the generation in the
//! token makes such a late event miss instead of reaching the new occupant.

use mio::Token;

/// Tokens at or above this value are reserved for the worker itself.
const GENERATION_BITS: u32 = 31;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// Slots indexed by [`Token`], each token valid for one occupant only.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Number of occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value`, returning the token that now names it.
    pub fn insert(&mut self, value: T) -> Token {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.value = Some(value);
            return make_token(index, slot.generation);
        }
        let index = u32::try_from(self.slots.len()).expect("more than 2^32 connections");
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        make_token(index, 0)
    }

    /// The value `token` names, if it is still the current occupant.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (index, generation) = split_token(token);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Takes the value out; the token will never match again.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (index, generation) = split_token(token);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = (slot.generation + 1) & GENERATION_MASK as u32;
        self.free.push(index as u32);
        self.len -= 1;
        Some(value)
    }

    /// Tokens of every occupied slot.
    pub fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(index, slot)| make_token(index as u32, slot.generation))
            .collect()
    }
}

fn make_token(index: u32, generation: u32) -> Token {
    Token(((generation as u64) << 32 | index as u64) as usize)
}

fn split_token(token: Token) -> (usize, u32) {
    let raw = token.0 as u64;
    ((raw & 0xFFFF_FFFF) as usize, (raw >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_token_misses_the_reused_slot() {
        let mut slab = Slab::default();
        let first = slab.insert("a");
        assert_eq!(slab.remove(first), Some("a"));
        let second = slab.insert("b");
        assert_ne!(first, second);
        assert_eq!(slab.get_mut(first), None);
        assert_eq!(slab.remove(first), None);
        assert_eq!(slab.get_mut(second), Some(&mut "b"));
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.tokens(), vec![second]);
    }

    #[test]
    fn tokens_never_reach_the_reserved_range() {
        let token = make_token(u32::MAX, GENERATION_MASK as u32);
        assert!(token.0 < usize::MAX - 16);
    }
}
