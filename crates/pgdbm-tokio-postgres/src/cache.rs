//! A small bounded LRU of prepared statements (or, in `StatementMode::Unnamed`, of statement
//! descriptions), keyed by SQL text.

use std::collections::HashMap;

use tokio_postgres::Statement;

/// foldhash instead of std's SipHash: every statement hashes its SQL text here, and the map
/// is bounded by the capacity, so colliding keys cannot grow a chain past it.
type Hasher = foldhash::fast::RandomState;

/// Least-recently-used cache of prepared statements (`V` = [`Statement`]) or descriptions.
///
/// Lookups and inserts are O(1); evicting scans the entries once (O(capacity)), which only
/// happens when a new statement arrives in a full cache.
#[derive(Debug)]
pub(crate) struct StatementCache<V = Statement> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (V, u64), Hasher>,
}

impl<V: Clone> StatementCache<V> {
    /// A cache holding at most `capacity` statements (0 disables caching).
    pub(crate) fn new(capacity: usize) -> Self {
        StatementCache {
            capacity,
            tick: 0,
            entries: HashMap::default(),
        }
    }

    /// True when caching is on.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cached statement for `sql`, marking it recently used.
    pub(crate) fn get(&mut self, sql: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(sql).map(|(stmt, used)| {
            *used = tick;
            stmt.clone()
        })
    }

    /// Caches `stmt` for `sql`, evicting the least recently used entry when full. Dropping an
    /// evicted statement closes it on the server.
    pub(crate) fn insert(&mut self, sql: &str, stmt: V) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        if !self.entries.contains_key(sql) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(sql.to_string(), (stmt, self.tick));
    }

    /// Forgets the statement for `sql`.
    pub(crate) fn remove(&mut self, sql: &str) {
        self.entries.remove(sql);
    }

    /// Forgets every statement.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of cached statements.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
