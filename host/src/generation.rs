//! The immutable snapshot built from config that workers read.
