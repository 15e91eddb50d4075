//! The shared pool behaviour tests (pgdbm-deadpool/tests/common/pool_behaviour.rs) run on
//! [`Bb8Pool`]: one test body for both backends.
#![allow(missing_docs)]

#[macro_use]
#[path = "../../pgdbm-deadpool/tests/common/pool_behaviour.rs"]
mod common;

use pgdbm_bb8::Bb8Pool;

pool_tests!(Bb8Pool);
