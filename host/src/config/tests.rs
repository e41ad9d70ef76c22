//! Unit tests of loading, line indexing and validation.
