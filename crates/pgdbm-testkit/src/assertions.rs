//! [`assert_table_unchanged`]: compare a table with an earlier [`snapshot_table`].

use std::collections::BTreeMap;

use pgdbm_core::{Database, Error, Pool, Result};

use crate::{snapshot_table, SnapshotRow};

/// How many rows `after` has that `before` lacks, and the reverse, counting duplicates (the
/// snapshots are compared as multisets, so their order does not matter).
pub fn table_diff(before: &[SnapshotRow], after: &[SnapshotRow]) -> (usize, usize) {
    let mut counts: BTreeMap<&SnapshotRow, i64> = BTreeMap::new();
    for row in before {
        *counts.entry(row).or_insert(0) -= 1;
    }
    for row in after {
        *counts.entry(row).or_insert(0) += 1;
    }
    let added = counts
        .values()
        .filter(|n| **n > 0)
        .map(|n| n.unsigned_abs())
        .sum::<u64>();
    let removed = counts
        .values()
        .filter(|n| **n < 0)
        .map(|n| n.unsigned_abs())
        .sum::<u64>();
    (
        usize::try_from(added).unwrap_or(usize::MAX),
        usize::try_from(removed).unwrap_or(usize::MAX),
    )
}

/// Checks that `table` still holds exactly the rows of `before` (a [`snapshot_table`] taken
/// earlier). An updated row counts as one removed and one added.
///
/// # Errors
/// [`Error::TestDatabase`] "Table 'x' has changed! Added rows: n Removed rows: m", or the
/// error of reading the table.
pub async fn assert_table_unchanged<P: Pool>(
    db: &Database<P>,
    table: &str,
    before: &[SnapshotRow],
) -> Result<()> {
    let after = snapshot_table(db, table, None).await?;
    let (added, removed) = table_diff(before, &after);
    if added == 0 && removed == 0 {
        Ok(())
    } else {
        Err(changed(table, added, removed))
    }
}

fn changed(table: &str, added: usize, removed: usize) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!(
            "Table '{table}' has changed! Added rows: {added} Removed rows: {removed}"
        ),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> SnapshotRow {
        SnapshotRow::from([("id".to_string(), Some(id.to_string()))])
    }

    #[test]
    fn diffs_count_added_and_removed_rows() {
        let before = vec![row("1"), row("2"), row("2")];
        assert_eq!(table_diff(&before, &before), (0, 0));
        assert_eq!(table_diff(&before, &[row("2"), row("1"), row("2")]), (0, 0));
        assert_eq!(table_diff(&before, &[row("1"), row("2")]), (0, 1));
        assert_eq!(
            table_diff(&before, &[row("1"), row("2"), row("2"), row("3")]),
            (1, 0)
        );
        assert_eq!(table_diff(&before, &[row("1"), row("2"), row("4")]), (1, 1));
        let message = changed("users", 1, 2).to_string();
        assert!(
            message.contains("Table 'users' has changed! Added rows: 1 Removed rows: 2"),
            "{message}"
        );
    }
}
