//! The shared pool behaviour tests (tests/common/pool_behaviour.rs) run on [`DeadpoolPool`].
#![allow(missing_docs)]

#[macro_use]
#[path = "common/pool_behaviour.rs"]
mod common;

use pgdbm_deadpool::DeadpoolPool;

pool_tests!(DeadpoolPool);
