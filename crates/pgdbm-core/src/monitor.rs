//! Query monitoring (Python: `MonitoredAsyncDatabaseManager`), layered around the query path.
//!
//! A [`Monitor`] is a [`QueryObserver`]: attach it to a [`Database`] with [`Monitor::attach`] (or
//! [`Database::add_observer`]) and it sees every query of that database, its schema views,
//! connections and transactions. It keeps
//! - counters (total, failed and slow queries, total and maximum duration, rows), always, in
//!   atomics;
//! - with [`MonitorConfig::track_query_metrics`], a bounded history of the most recent queries and
//!   a bounded list of the most recent slow ones, from which [`Monitor::analyze_query_patterns`]
//!   groups queries by their normalized shape ([`normalize_query`]).
//!
//! Slow queries are also logged with `tracing::warn!` (target `pgdbm::slow`).
//!
//! Parameters are never stored: a [`QueryRecord`] holds the SQL text (which has `$n`
//! placeholders, not values) and, for a failed query, the error's kind, SQLSTATE and message
//! only. The monitor reads no clock: records are ordered by a sequence number
//! ([`QueryRecord::at`]).
//!
//! ```
//! use std::time::Duration;
//! use pgdbm_core::monitor::{Monitor, MonitorConfig};
//!
//! let monitor = Monitor::new(MonitorConfig {
//!     slow_query_threshold: Duration::from_millis(250),
//!     ..MonitorConfig::default()
//! });
//! assert_eq!(monitor.query_metrics().total_queries, 0);
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::truncate_sql;
use crate::{Database, Error, Pool, PoolStats, QueryEvent, QueryObserver};

/// Longest SQL text (in characters) kept in a [`QueryRecord`].
pub const MAX_RECORDED_SQL: usize = 1000;

/// A pattern that ran at least this many times (within the history) gets a suggestion to
/// prepare it or batch it.
pub const REPEATED_PATTERN_THRESHOLD: u64 = 10;

/// How many patterns [`QueryPatterns::top_by_total_time`] lists at most.
pub const TOP_PATTERNS: usize = 10;

/// Settings of a [`Monitor`] (Python: the extra constructor parameters of
/// `MonitoredAsyncDatabaseManager`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Queries that take at least this long are slow: counted, kept in the slow list and
    /// logged (default 1 s).
    pub slow_query_threshold: Duration,
    /// Keep the query history and slow-query list (default `true`). When `false` only the
    /// counters are kept.
    pub track_query_metrics: bool,
    /// Number of queries kept in the history (and in the slow-query list); the oldest are
    /// dropped first (default 1000). `0` keeps none.
    pub query_history_size: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            slow_query_threshold: Duration::from_secs(1),
            track_query_metrics: true,
            query_history_size: 1000,
        }
    }
}

/// One query as the monitor recorded it. Never holds parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryRecord {
    /// The SQL as sent (rendered), cut to [`MAX_RECORDED_SQL`] characters.
    pub sql: String,
    /// The operation (`"execute"`, `"fetch_all"`, ...).
    pub operation: &'static str,
    /// The schema of the database view that ran it.
    pub schema: Option<String>,
    /// How long it took.
    pub duration: Duration,
    /// Rows returned or affected, when it succeeded.
    pub rows: Option<u64>,
    /// For a failed query: the error's kind, SQLSTATE and message (no parameters).
    pub error: Option<String>,
    /// Sequence number of the query as the monitor saw it (0 for the first; increases by one per
    /// query, also for queries not kept).
    pub at: u64,
}

impl QueryRecord {
    /// The duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        self.duration.as_secs_f64() * 1000.0
    }

    /// True when the query failed.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Aggregated counters (Python: `get_query_metrics()`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct QueryMetrics {
    /// Queries seen.
    pub total_queries: u64,
    /// Queries that returned an error.
    pub failed_queries: u64,
    /// Sum of all durations.
    pub total_duration: Duration,
    /// Mean duration in milliseconds (0 when no query ran).
    pub avg_duration_ms: f64,
    /// Longest duration in milliseconds.
    pub max_duration_ms: f64,
    /// Queries at or above the slow-query threshold.
    pub slow_queries: u64,
    /// Rows returned or affected, summed over successful queries.
    pub rows: u64,
}

/// Statistics of one normalized query shape.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PatternStats {
    /// The normalized query ([`normalize_query`]).
    pub pattern: String,
    /// How many times it ran.
    pub count: u64,
    /// Sum of its durations.
    pub total_duration: Duration,
    /// Mean duration in milliseconds.
    pub avg_duration_ms: f64,
    /// Longest duration in milliseconds.
    pub max_duration_ms: f64,
    /// How many of its runs failed.
    pub errors: u64,
}

/// The result of [`Monitor::analyze_query_patterns`] (Python: `analyze_query_patterns()`),
/// computed over the queries in the history.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct QueryPatterns {
    /// Number of queries analysed (the history's length).
    pub analyzed_queries: usize,
    /// Number of distinct patterns.
    pub total_patterns: usize,
    /// The patterns with the largest total time, largest first (at most [`TOP_PATTERNS`]).
    pub top_by_total_time: Vec<PatternStats>,
    /// The patterns run most often, most frequent first (at most [`TOP_PATTERNS`]).
    pub top_by_count: Vec<PatternStats>,
    /// Human-readable optimisation hints.
    pub suggestions: Vec<String>,
}

/// Pool counters together with the monitor's query counters (Python: `get_connection_metrics()`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ConnectionMetrics {
    /// The pool's counters.
    pub pool: PoolStats,
    /// Checked-out connections as a fraction of the pool's maximum (0 when the maximum is 0).
    pub utilization: f64,
    /// The monitor's query counters.
    pub queries: QueryMetrics,
}

/// Collects query metrics from a [`Database`]; see the [module docs](self).
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    seq: AtomicU64,
    total: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    rows: AtomicU64,
    total_nanos: AtomicU64,
    max_nanos: AtomicU64,
    history: Mutex<RingBuffer<QueryRecord>>,
    slow_list: Mutex<RingBuffer<QueryRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a ring buffer half-updated in a way that
    // matters (push is one VecDeque operation), so a poisoned lock is still usable.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1_000_000.0
}

/// The error of a failed query, as recorded: kind, SQLSTATE and message for query errors (their
/// parameters, even when the user opted in to showing them, and the SQL are left out), the
/// `Display` text for other errors (which never contain parameters).
fn describe_error(e: &Error) -> String {
    match e.as_query() {
        Some(q) => {
            let mut s = format!("query failed ({}", q.kind);
            if let Some(code) = &q.sqlstate {
                let _ = write!(s, ", SQLSTATE {code}");
            }
            let _ = write!(s, "): {}", q.message);
            if let Some(r) = q.row {
                let _ = write!(s, "; failing row: {r}");
            }
            s
        }
        None => e.to_string(),
    }
}

impl Monitor {
    /// A monitor with `config`, not attached to anything yet.
    pub fn new(config: MonitorConfig) -> Self {
        let capacity = if config.track_query_metrics {
            config.query_history_size
        } else {
            0
        };
        Monitor {
            seq: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            total_nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
            history: Mutex::new(RingBuffer::new(capacity)),
            slow_list: Mutex::new(RingBuffer::new(capacity)),
            config,
        }
    }

    /// Creates a monitor and attaches it to `db` (and so to all its views, connections and
    /// transactions, which share its observers).
    pub fn attach<P: Pool>(db: &Database<P>, config: MonitorConfig) -> Arc<Monitor> {
        let monitor = Arc::new(Monitor::new(config));
        db.add_observer(monitor.clone());
        monitor
    }

    /// The monitor's settings.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Aggregated counters since creation or the last [`reset`](Monitor::reset).
    pub fn query_metrics(&self) -> QueryMetrics {
        let total_queries = self.total.load(Ordering::Relaxed);
        let total_nanos = self.total_nanos.load(Ordering::Relaxed);
        QueryMetrics {
            total_queries,
            failed_queries: self.failed.load(Ordering::Relaxed),
            total_duration: Duration::from_nanos(total_nanos),
            avg_duration_ms: if total_queries == 0 {
                0.0
            } else {
                ms(total_nanos) / total_queries as f64
            },
            max_duration_ms: ms(self.max_nanos.load(Ordering::Relaxed)),
            slow_queries: self.slow.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }

    /// The `limit` most recent slow queries, most recent first (Python: `get_slow_queries`).
    /// Empty when `track_query_metrics` is off.
    pub fn slow_queries(&self, limit: usize) -> Vec<QueryRecord> {
        lock(&self.slow_list).newest(limit)
    }

    /// The `limit` most recent queries, most recent first (Python: `get_query_history`).
    /// Empty when `track_query_metrics` is off.
    pub fn query_history(&self, limit: usize) -> Vec<QueryRecord> {
        lock(&self.history).newest(limit)
    }

    /// The `limit` most recent queries that took at least `threshold`, most recent first
    /// (Python: `get_slow_queries(threshold_ms=...)`): a per-call threshold instead of the
    /// configured one. Looks at the history and the slow list (which may reach further back),
    /// each query once. Empty when `track_query_metrics` is off.
    pub fn slow_queries_over(&self, threshold: Duration, limit: usize) -> Vec<QueryRecord> {
        let mut found: Vec<QueryRecord> = lock(&self.history)
            .newest(usize::MAX)
            .into_iter()
            .filter(|r| r.duration >= threshold)
            .collect();
        let oldest_in_history = found.last().map_or(u64::MAX, |r| r.at);
        found.extend(
            lock(&self.slow_list)
                .newest(usize::MAX)
                .into_iter()
                .filter(|r| r.duration >= threshold && r.at < oldest_in_history),
        );
        found.sort_by_key(|r| std::cmp::Reverse(r.at));
        found.dedup_by_key(|r| r.at);
        found.truncate(limit);
        found
    }

    /// The `limit` most recent queries, most recent first, with failed ones left out unless
    /// `include_errors` (Python: `get_query_history(limit, include_errors)`).
    pub fn query_history_filtered(&self, limit: usize, include_errors: bool) -> Vec<QueryRecord> {
        let history = lock(&self.history);
        if include_errors {
            return history.newest(limit);
        }
        history
            .newest(usize::MAX)
            .into_iter()
            .filter(|r| !r.failed())
            .take(limit)
            .collect()
    }

    /// Groups the queries in the history by normalized shape ([`normalize_query`]) and suggests
    /// optimisations (Python: `analyze_query_patterns`).
    pub fn analyze_query_patterns(&self) -> QueryPatterns {
        // Copy out under the lock, analyse outside it.
        let records = lock(&self.history).newest(usize::MAX);
        analyze(&records, self.config.slow_query_threshold)
    }

    /// The pool's counters of `db` with this monitor's query counters (Python:
    /// `get_connection_metrics`).
    pub fn connection_metrics<P: Pool>(&self, db: &Database<P>) -> ConnectionMetrics {
        let pool = db.pool_stats();
        ConnectionMetrics {
            pool,
            utilization: if pool.max_size == 0 {
                0.0
            } else {
                pool.in_use as f64 / pool.max_size as f64
            },
            queries: self.query_metrics(),
        }
    }

    /// Clears counters, history and slow list. The sequence number keeps counting.
    pub fn reset(&self) {
        lock(&self.history).clear();
        lock(&self.slow_list).clear();
        for c in [
            &self.total,
            &self.failed,
            &self.slow,
            &self.rows,
            &self.total_nanos,
            &self.max_nanos,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

impl QueryObserver for Monitor {
    fn on_query(&self, event: &QueryEvent<'_>) {
        let at = self.seq.fetch_add(1, Ordering::Relaxed);
        let d = nanos(event.duration);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.total_nanos.fetch_add(d, Ordering::Relaxed);
        self.max_nanos.fetch_max(d, Ordering::Relaxed);
        if event.error.is_some() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = event.rows {
            self.rows.fetch_add(n, Ordering::Relaxed);
        }
        let slow = event.duration >= self.config.slow_query_threshold;
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "pgdbm::slow",
                duration_ms = event.duration.as_secs_f64() * 1000.0,
                threshold_ms = self.config.slow_query_threshold.as_secs_f64() * 1000.0,
                op = event.operation,
                schema = event.schema,
                sql = %truncate_sql(event.sql, crate::error::MAX_DISPLAYED_SQL),
                "slow query"
            );
        }
        if !self.config.track_query_metrics || self.config.query_history_size == 0 {
            return;
        }
        // Build the record outside any lock; the critical sections are one push each.
        let record = QueryRecord {
            sql: truncate_sql(event.sql, MAX_RECORDED_SQL).into_owned(),
            operation: event.operation,
            schema: event.schema.map(str::to_string),
            duration: event.duration,
            rows: event.rows,
            error: event.error.map(describe_error),
            at,
        };
        if slow {
            lock(&self.slow_list).push(record.clone());
        }
        lock(&self.history).push(record);
    }
}

/// A bounded FIFO: pushing onto a full buffer drops the oldest element.
#[derive(Debug, Clone)]
pub(crate) struct RingBuffer<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone> RingBuffer<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        RingBuffer {
            // Do not reserve a huge capacity up front: grow as needed up to `capacity`.
            items: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.capacity == 0 {
            return;
        }
        while self.items.len() >= self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Up to `limit` items, newest first.
    pub(crate) fn newest(&self, limit: usize) -> Vec<T> {
        self.items.iter().rev().take(limit).cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }
}

#[derive(Default)]
struct Acc {
    count: u64,
    total: Duration,
    max: Duration,
    errors: u64,
}

fn analyze(records: &[QueryRecord], slow_threshold: Duration) -> QueryPatterns {
    let mut groups: HashMap<String, Acc> = HashMap::new();
    for r in records {
        let acc = groups.entry(normalize_query(&r.sql)).or_default();
        acc.count += 1;
        acc.total = acc.total.saturating_add(r.duration);
        acc.max = acc.max.max(r.duration);
        if r.failed() {
            acc.errors += 1;
        }
    }
    let mut stats: Vec<PatternStats> = groups
        .into_iter()
        .map(|(pattern, a)| PatternStats {
            pattern,
            count: a.count,
            total_duration: a.total,
            avg_duration_ms: a.total.as_secs_f64() * 1000.0 / a.count.max(1) as f64,
            max_duration_ms: a.max.as_secs_f64() * 1000.0,
            errors: a.errors,
        })
        .collect();
    let total_patterns = stats.len();

    let mut suggestions = Vec::new();
    // Deterministic order for suggestions: most total time first, then pattern text.
    stats.sort_by(|a, b| {
        b.total_duration
            .cmp(&a.total_duration)
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    let threshold_ms = slow_threshold.as_secs_f64() * 1000.0;
    for p in &stats {
        let shown = truncate_sql(&p.pattern, 100);
        if p.count >= REPEATED_PATTERN_THRESHOLD {
            suggestions.push(format!(
                "pattern `{shown}` ran {} times: consider prepare_query / add_prepared_statement, \
                 or execute_many / copy_records_to_table for bulk writes",
                p.count
            ));
        }
        if p.avg_duration_ms >= threshold_ms {
            suggestions.push(format!(
                "pattern `{shown}` averages {:.1} ms (slow-query threshold {:.1} ms): check its \
                 plan with EXPLAIN ANALYZE and the indexes it needs",
                p.avg_duration_ms, threshold_ms
            ));
        }
        if p.errors > 0 {
            suggestions.push(format!(
                "pattern `{shown}` failed {} of {} times: see query_history for the errors",
                p.errors, p.count
            ));
        }
    }
    let top_by_total_time: Vec<PatternStats> = stats.iter().take(TOP_PATTERNS).cloned().collect();
    stats.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| b.total_duration.cmp(&a.total_duration))
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    stats.truncate(TOP_PATTERNS);
    QueryPatterns {
        analyzed_queries: records.len(),
        total_patterns,
        top_by_total_time,
        top_by_count: stats,
        suggestions,
    }
}

/// The shape of a query, for grouping: string, dollar-quoted, bit/hex and numeric literals become
/// `?`, comments are dropped, whitespace runs become one space, and a trailing `;` is removed.
/// Keywords, identifiers (quoted ones unchanged), operators and `$n` parameters are kept;
/// spacing around `,` and parentheses is made uniform (`f( 1 ,2 )` becomes `f(?, ?)`).
///
/// ```
/// use pgdbm_core::monitor::normalize_query;
/// assert_eq!(
///     normalize_query("SELECT *\n  FROM users WHERE id = 42 AND name = 'O''Brien';"),
///     "SELECT * FROM users WHERE id = ? AND name = ?"
/// );
/// assert_eq!(normalize_query("SELECT $1::int"), "SELECT $1::int");
/// ```
pub fn normalize_query(sql: &str) -> String {
    use crate::sql::{tokens, Kind};
    let mut out = String::with_capacity(sql.len().min(MAX_RECORDED_SQL));
    let mut pending_space = false;
    // Spacing is canonical: one space between tokens that had whitespace between them, none
    // before `,` or `)` or after `(`, always one after `,`.
    let emit = |out: &mut String, piece: &str, pending_space: &mut bool| {
        let space = if piece.starts_with([',', ')']) || out.ends_with('(') {
            false
        } else {
            out.ends_with(',') || (*pending_space && !out.is_empty())
        };
        if space {
            out.push(' ');
        }
        *pending_space = false;
        out.push_str(piece);
    };
    // A string literal starting exactly at byte `at` (a prefixed constant such as `E'...'`).
    let literal_at = |tok: Option<&(Kind, std::ops::Range<usize>)>, at: usize| matches!(tok, Some((Kind::Literal, r)) if r.start == at && sql[r.clone()].starts_with('\''));
    let mut toks = tokens(sql).peekable();
    while let Some((kind, range)) = toks.next() {
        let text = &sql[range.clone()];
        match kind {
            Kind::Space | Kind::Comment => pending_space = true,
            Kind::Literal | Kind::Number => emit(&mut out, "?", &mut pending_space),
            Kind::Word => {
                if matches!(text, "E" | "e" | "B" | "b" | "X" | "x" | "N" | "n")
                    && literal_at(toks.peek(), range.end)
                {
                    // E'', B'', X'', N'': the literal that follows gives the `?`.
                    continue;
                }
                if matches!(text, "U" | "u") {
                    let mut ahead = toks.clone();
                    let amp = ahead.next();
                    let glued_amp = matches!(&amp, Some((Kind::Other, r)) if r.start == range.end && &sql[r.clone()] == "&");
                    if glued_amp && literal_at(ahead.peek(), range.end + 1) {
                        // U&'...': skip the `&`; the literal gives the `?`.
                        toks.next();
                        continue;
                    }
                }
                emit(&mut out, text, &mut pending_space);
            }
            Kind::QuotedIdent | Kind::Param | Kind::Semicolon | Kind::Other => {
                emit(&mut out, text, &mut pending_space)
            }
        }
    }
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizer_replaces_literals_and_collapses_whitespace() {
        let cases = [
            ("SELECT 1", "SELECT ?"),
            ("SELECT 2;", "SELECT ?"),
            ("  select\t\n 1.5e-3 ,  .5 ", "select ?, ?"),
            ("SELECT $1::int", "SELECT $1::int"),
            ("SELECT 'a' || 'it''s'", "SELECT ? || ?"),
            ("SELECT E'\\'x'", "SELECT ?"),
            ("SELECT $$a ' b$$, $tag$ $$ $tag$", "SELECT ?, ?"),
            (
                "SELECT x'1F', b'101', N'n', U&'d\\0061'",
                "SELECT ?, ?, ?, ?",
            ),
            (
                "SELECT \"Col 1\" FROM t1 -- trailing 5\n WHERE a=3",
                "SELECT \"Col 1\" FROM t1 WHERE a=?",
            ),
            ("SELECT /* 1 /* 2 */ */ 3", "SELECT ?"),
            (
                "SELECT a$1 FROM t WHERE id IN (1, 2, 3)",
                "SELECT a$1 FROM t WHERE id IN (?, ?, ?)",
            ),
            ("SELECT 0x1F, 1_000", "SELECT ?, ?"),
            ("SELECT f( 1 ,2 ),g(3)", "SELECT f(?, ?), g(?)"),
            ("", ""),
            ("'unterminated", "?"),
            ("SELECT 'é' , ñ", "SELECT ?, ñ"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_query(input), want, "input: {input:?}");
        }
    }

    #[test]
    fn same_shape_different_literals_group_together() {
        assert_eq!(normalize_query("SELECT 1"), normalize_query("SELECT   2"));
        assert_ne!(
            normalize_query("SELECT 1 FROM a"),
            normalize_query("SELECT 1 FROM b")
        );
    }

    #[test]
    fn ring_buffer_keeps_the_newest() {
        let mut r = RingBuffer::new(3);
        for i in 0..10 {
            r.push(i);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.newest(10), vec![9, 8, 7]);
        assert_eq!(r.newest(2), vec![9, 8]);
        r.clear();
        assert!(r.newest(5).is_empty());
        let mut zero = RingBuffer::new(0);
        zero.push(1);
        assert!(zero.newest(5).is_empty());
    }

    fn event<'a>(sql: &'a str, ms: u64, error: Option<&'a Error>) -> QueryEvent<'a> {
        QueryEvent {
            operation: "fetch_all",
            sql,
            schema: Some("s"),
            duration: Duration::from_millis(ms),
            rows: if error.is_some() { None } else { Some(1) },
            error,
            replica: false,
        }
    }

    #[test]
    fn monitor_counts_and_records() {
        let m = Monitor::new(MonitorConfig {
            slow_query_threshold: Duration::from_millis(100),
            track_query_metrics: true,
            query_history_size: 3,
        });
        let err: Error = crate::QueryError::new(crate::QueryErrorKind::Server, "boom", "SELECT x")
            .with_params(crate::QueryParams::Shown(vec!["\"secret\"".into()]))
            .into();
        m.on_query(&event("SELECT 1", 10, None));
        m.on_query(&event("SELECT 2", 200, None));
        m.on_query(&event("SELECT x", 5, Some(&err)));
        m.on_query(&event("SELECT 3", 300, None));
        let q = m.query_metrics();
        assert_eq!(q.total_queries, 4);
        assert_eq!(q.failed_queries, 1);
        assert_eq!(q.slow_queries, 2);
        assert_eq!(q.rows, 3);
        assert_eq!(q.total_duration, Duration::from_millis(515));
        assert!((q.max_duration_ms - 300.0).abs() < 1e-9);
        assert!((q.avg_duration_ms - 128.75).abs() < 1e-9);

        let h = m.query_history(10);
        assert_eq!(
            h.iter().map(|r| r.at).collect::<Vec<_>>(),
            vec![3, 2, 1],
            "oldest dropped"
        );
        let failed = &h[1];
        let e = failed.error.as_deref().unwrap_or_default();
        assert!(e.contains("boom"), "{e}");
        assert!(
            !e.contains("secret"),
            "parameters must never be recorded: {e}"
        );
        assert_eq!(failed.schema.as_deref(), Some("s"));

        let slow = m.slow_queries(10);
        assert_eq!(
            slow.iter().map(|r| r.sql.as_str()).collect::<Vec<_>>(),
            vec!["SELECT 3", "SELECT 2"]
        );
        assert_eq!(m.slow_queries(1).len(), 1);

        m.reset();
        assert_eq!(m.query_metrics(), QueryMetrics::default());
        assert!(m.query_history(10).is_empty());
        assert!(m.slow_queries(10).is_empty());
        m.on_query(&event("SELECT 1", 1, None));
        assert_eq!(m.query_history(1)[0].at, 4, "sequence keeps counting");
    }

    #[test]
    fn without_tracking_only_counters_are_kept() {
        let m = Monitor::new(MonitorConfig {
            slow_query_threshold: Duration::from_millis(1),
            track_query_metrics: false,
            query_history_size: 10,
        });
        m.on_query(&event("SELECT 1", 5, None));
        assert_eq!(m.query_metrics().total_queries, 1);
        assert_eq!(m.query_metrics().slow_queries, 1);
        assert!(m.query_history(10).is_empty());
        assert!(m.slow_queries(10).is_empty());
        assert_eq!(m.analyze_query_patterns().total_patterns, 0);
    }

    #[test]
    fn long_sql_is_truncated_in_records() {
        let m = Monitor::new(MonitorConfig::default());
        let sql = format!("SELECT {}", "x".repeat(5000));
        m.on_query(&event(&sql, 1, None));
        let r = &m.query_history(1)[0];
        assert!(r.sql.chars().count() <= MAX_RECORDED_SQL + 1);
        assert!(r.sql.starts_with("SELECT xxx"));
    }

    #[test]
    fn patterns_group_and_suggest() {
        let m = Monitor::new(MonitorConfig {
            slow_query_threshold: Duration::from_millis(100),
            ..MonitorConfig::default()
        });
        for i in 0..REPEATED_PATTERN_THRESHOLD {
            let sql = format!("SELECT * FROM t WHERE id = {i}");
            m.on_query(&event(&sql, 2, None));
        }
        m.on_query(&event("SELECT pg_sleep(0.5)", 500, None));
        let err = Error::Monitoring {
            message: "x".into(),
        };
        m.on_query(&event("SELECT bad", 1, Some(&err)));
        let p = m.analyze_query_patterns();
        assert_eq!(p.analyzed_queries, 12);
        assert_eq!(p.total_patterns, 3);
        assert_eq!(p.top_by_total_time[0].pattern, "SELECT pg_sleep(?)");
        let first = &p.top_by_count[0];
        assert_eq!(first.pattern, "SELECT * FROM t WHERE id = ?");
        assert_eq!(first.count, REPEATED_PATTERN_THRESHOLD);
        assert_eq!(first.total_duration, Duration::from_millis(20));
        assert!((first.avg_duration_ms - 2.0).abs() < 1e-9);
        let bad = p
            .top_by_count
            .iter()
            .find(|s| s.pattern == "SELECT bad")
            .map(|s| s.errors);
        assert_eq!(bad, Some(1));
        let joined = p.suggestions.join("\n");
        assert!(joined.contains("ran 10 times"), "{joined}");
        assert!(joined.contains("EXPLAIN ANALYZE"), "{joined}");
        assert!(joined.contains("failed 1 of 1"), "{joined}");
        assert_eq!(p.suggestions.len(), 3, "{joined}");
    }

    proptest! {
        #[test]
        fn ring_buffer_matches_a_model(cap in 0usize..8, n in 0usize..40, limit in 0usize..10) {
            let mut r = RingBuffer::new(cap);
            for i in 0..n {
                r.push(i);
            }
            let kept = n.min(cap);
            let want: Vec<usize> = (n - kept..n).rev().take(limit).collect();
            prop_assert_eq!(r.newest(limit), want);
        }

        #[test]
        fn normalizer_never_panics_and_is_idempotent(s in "\\PC{0,60}") {
            let once = normalize_query(&s);
            // Quoted identifiers are kept verbatim (`"a  b"` is another name than `"a b"`), so
            // runs of spaces may only survive when there is one.
            if !s.contains('"') {
                prop_assert!(!once.contains("  "));
            }
            prop_assert_eq!(normalize_query(&once), once.clone());
        }

        #[test]
        fn numbers_never_change_the_pattern(a in 0u64..1_000_000, b in 0u64..1_000_000) {
            prop_assert_eq!(
                normalize_query(&format!("SELECT * FROM t WHERE x = {a} LIMIT {b}")),
                "SELECT * FROM t WHERE x = ? LIMIT ?"
            );
        }
    }

    #[test]
    fn quoted_identifiers_keep_their_spaces() {
        // proptest found `"  0` (an unterminated quoted identifier): kept as written.
        assert_eq!(normalize_query("\"  0"), "\"  0");
        assert_eq!(
            normalize_query("SELECT  \"a  b\"  FROM t"),
            "SELECT \"a  b\" FROM t"
        );
    }

    #[test]
    fn per_call_threshold_and_error_filter() {
        let m = Monitor::new(MonitorConfig {
            slow_query_threshold: Duration::from_millis(100),
            track_query_metrics: true,
            query_history_size: 3,
        });
        let err: Error =
            crate::QueryError::new(crate::QueryErrorKind::Server, "boom", "SELECT x").into();
        m.on_query(&event("SELECT old_slow", 500, None)); // 0: only in the slow list at the end
        m.on_query(&event("SELECT 1", 10, None)); // 1: dropped from the history
        m.on_query(&event("SELECT 2", 50, None)); // 2
        m.on_query(&event("SELECT x", 60, Some(&err))); // 3
        m.on_query(&event("SELECT 3", 200, None)); // 4
        let at = |v: Vec<QueryRecord>| v.iter().map(|r| r.at).collect::<Vec<_>>();
        // Lower than the configured threshold: found in the history.
        assert_eq!(
            at(m.slow_queries_over(Duration::from_millis(40), 10)),
            [4, 3, 2, 0]
        );
        assert_eq!(
            at(m.slow_queries_over(Duration::from_millis(40), 2)),
            [4, 3]
        );
        // Higher: only the slowest, from both lists, each once.
        assert_eq!(
            at(m.slow_queries_over(Duration::from_millis(150), 10)),
            [4, 0]
        );
        assert_eq!(
            at(m.slow_queries_over(Duration::from_secs(1), 10)),
            Vec::<u64>::new()
        );
        // The configured-threshold list is unchanged.
        assert_eq!(at(m.slow_queries(10)), [4, 0]);

        assert_eq!(at(m.query_history_filtered(10, true)), [4, 3, 2]);
        assert_eq!(at(m.query_history_filtered(10, false)), [4, 2]);
        assert_eq!(at(m.query_history_filtered(1, false)), [4]);
    }
}
