//! Where results go: the atomic, symlink-safe writer.

pub mod writer;
