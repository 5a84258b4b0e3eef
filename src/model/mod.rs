//! The pure core: what an inventory is, which entries are valid targets,
//! and how targets render as a file_sd document. No I/O and no `Config`.

pub mod address;
pub mod digest;
pub mod inventory;
pub mod labels;
pub mod names;
pub mod par;
pub mod sort;
pub mod targets;
pub mod text;
