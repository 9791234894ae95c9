//! Integration tests for psyne live in the test targets of this package.
