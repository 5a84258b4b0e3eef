//! Where results go: the atomic, symlink-safe writer, the document
//! rendered into it, and publishing through it.

pub mod metrics;
pub mod publish;
pub mod render;
pub mod writer;
