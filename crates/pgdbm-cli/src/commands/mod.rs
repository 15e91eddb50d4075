//! The subcommands.

pub(crate) mod db;
pub(crate) mod migrate;
pub(crate) mod schema;
