//! The CLI's error: a message for stderr; the process exits with status 1.

use std::fmt;

/// A failed command: what went wrong and how to fix it.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
}

impl CliError {
    /// An error with this message.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
        }
    }

    /// Prefixes the message with what was being done.
    pub(crate) fn context(self, what: &str) -> Self {
        CliError::new(format!("{what}: {}", self.message))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<pgdbm::Error> for CliError {
    fn from(e: pgdbm::Error) -> Self {
        // pgdbm's errors never contain passwords (DSNs are masked).
        CliError::new(e.to_string())
    }
}

/// `Result` with [`CliError`].
pub(crate) type CliResult<T> = Result<T, CliError>;
