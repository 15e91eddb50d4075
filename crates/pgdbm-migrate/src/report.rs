//! The result of [`Migrator::apply_pending`](crate::Migrator::apply_pending).

use std::fmt;

/// Outcome of a run (Python: the `status` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrationStatus {
    /// At least one migration was applied and none failed (`"success"`).
    Success,
    /// Nothing was pending (`"up_to_date"`).
    UpToDate,
    /// Dry run: [`MigrationReport::pending`] lists what would be applied (`"dry_run"`).
    DryRun,
    /// A migration (or the run itself) failed (`"error"`).
    Error,
}

impl MigrationStatus {
    /// The string Python pgdbm uses: `success`, `up_to_date`, `dry_run` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Success => "success",
            MigrationStatus::UpToDate => "up_to_date",
            MigrationStatus::DryRun => "dry_run",
            MigrationStatus::Error => "error",
        }
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One migration applied by a run.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedMigration {
    /// File name.
    pub filename: String,
    /// Execution time in milliseconds, as recorded in the history table (at least 1).
    pub execution_time_ms: f64,
}

/// What a run did (Python: the dict returned by `apply_pending_migrations`).
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationReport {
    /// Outcome.
    pub status: MigrationStatus,
    /// Migrations applied by this run, in order (on error: those applied before the failure).
    pub applied: Vec<AppliedMigration>,
    /// Migrations that were already applied before this run (file names, code-point order).
    pub skipped: Vec<String>,
    /// Migrations that were pending when the run started (a dry run applies none of them).
    pub pending: Vec<String>,
    /// Number of migrations: already applied plus pending.
    pub total: usize,
    /// Sum of [`AppliedMigration::execution_time_ms`].
    pub total_time_ms: f64,
    /// The error message, when [`status`](Self::status) is [`MigrationStatus::Error`].
    pub error: Option<String>,
    /// The file that failed, when a migration failed.
    pub failed_migration: Option<String>,
}

impl MigrationReport {
    pub(crate) fn empty() -> Self {
        MigrationReport {
            status: MigrationStatus::UpToDate,
            applied: Vec::new(),
            skipped: Vec::new(),
            pending: Vec::new(),
            total: 0,
            total_time_ms: 0.0,
            error: None,
            failed_migration: None,
        }
    }

    /// True when [`status`](Self::status) is not [`MigrationStatus::Error`].
    pub fn is_ok(&self) -> bool {
        self.status != MigrationStatus::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_are_pythons() {
        assert_eq!(MigrationStatus::Success.to_string(), "success");
        assert_eq!(MigrationStatus::UpToDate.to_string(), "up_to_date");
        assert_eq!(MigrationStatus::DryRun.to_string(), "dry_run");
        assert_eq!(MigrationStatus::Error.to_string(), "error");
        let mut r = MigrationReport::empty();
        assert!(r.is_ok());
        r.status = MigrationStatus::Error;
        assert!(!r.is_ok());
    }
}
