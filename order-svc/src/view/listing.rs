//! What a listing selects from the view, and the key range that holds it: the rows themselves
//! (`o` + inverted created-millis + order id) for every customer's orders, the index `c` +
//! customer + inverted created-millis + order id for one customer's; so key order is newest
//! first and a creation window is one key range. A cursor is the key of a page's last order
//! after the prefix (inverted millis · order id, 24 bytes).
use std::ops::Bound;

use chrono::{DateTime, Utc};
use shared::events::OrderStatus;
use uuid::Uuid;

/// A listing: whose orders, in which statuses, created when, which page.
#[derive(Debug, Clone)]
pub struct Listing {
    pub customer: Option<Uuid>,
    /// Any of these statuses; empty: all.
    pub statuses: Vec<OrderStatus>,
    /// Created strictly after / before.
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub page: Paging,
}

impl Listing {
    /// No filter at all: every order.
    pub(super) fn is_everything(&self) -> bool {
        self.statuses.is_empty() && self.created_after.is_none() && self.created_before.is_none()
    }
}

#[derive(Debug, Clone)]
pub enum Paging {
    /// Page `page` (from 1) of `size`.
    Number { page: usize, size: usize },
    /// `size` orders after `cursor` (the start when `None`).
    After {
        cursor: Option<Vec<u8>>,
        size: usize,
    },
}

impl Paging {
    pub(super) fn size(&self) -> usize {
        match self {
            Paging::Number { size, .. } | Paging::After { size, .. } => *size,
        }
    }
}

/// A listing's answer: one page, the total selected, the next page's cursor.
#[derive(Debug)]
pub struct Listed {
    pub orders: Vec<crate::domain::Order>,
    pub total: usize,
    pub next_cursor: Option<Vec<u8>>,
}

/// The length of a cursor: inverted millis (8) · order id (16).
pub const CURSOR_LEN: usize = 24;

/// The keys of one index prefix, narrowed to a creation window.
pub(super) struct IndexRange {
    pub(super) prefix: Vec<u8>,
    /// First key (inclusive) and the end (exclusive), both past the prefix.
    from: Vec<u8>,
    to: Option<Vec<u8>>,
}

impl IndexRange {
    pub(super) fn of(prefix: Vec<u8>) -> Self {
        Self {
            prefix,
            from: Vec::new(),
            to: None,
        }
    }

    /// Created after `after` and before `before` (both exclusive). Keys hold inverted millis,
    /// so the newest come first: `before` bounds the start, `after` the end.
    pub(super) fn created(&mut self, after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>) {
        let inverted = |t| super::rows::inverted(crate::domain::created_millis(t));
        if let Some(before) = before {
            self.from = inverted(before).saturating_add(1).to_be_bytes().to_vec();
        }
        if let Some(after) = after {
            self.to = Some(inverted(after).to_be_bytes().to_vec());
        }
    }

    /// The sled range: from the window's start, or just after `cursor` if given.
    pub(super) fn bounds(&self, cursor: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let key = |rest: &[u8]| [self.prefix.as_slice(), rest].concat();
        let start = match cursor {
            Some(c) if c >= self.from.as_slice() => Bound::Excluded(key(c)),
            _ => Bound::Included(key(&self.from)),
        };
        let end = match &self.to {
            Some(to) => Bound::Excluded(key(to)),
            None => match next_prefix(&self.prefix) {
                Some(p) => Bound::Excluded(p),
                None => Bound::Unbounded,
            },
        };
        (start, end)
    }
}

/// The smallest key greater than every key with `prefix`.
fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}
