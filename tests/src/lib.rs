//! Cross-crate integration tests of pgdbm (see `tests/tests/`).
