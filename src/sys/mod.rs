//! The operating system: signals, sd_notify, logging and its escaping,
//! the privilege drop, allocator tuning, clocks and early write-back.
//! Every `unsafe` block of the crate lives here.

pub(crate) mod alloc;
pub(crate) mod clock;
pub mod logging;
pub(crate) mod notify;
pub mod paths;
pub(crate) mod privileges;
pub(crate) mod signals;
pub(crate) mod wake;
pub(crate) mod writeback;
