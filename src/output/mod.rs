//! Where results go: the atomic, symlink-safe writer, and publishing
//! through it.

pub mod metrics;
pub mod publish;
pub mod writer;
