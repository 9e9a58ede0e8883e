//! The end-to-end harness. Every child process sits in a [`Guard`] that
//! kills it on drop; every wait has a timeout and fails with the last lines
//! of the child's output attached.

pub mod backend;
pub mod clients;
pub mod guard;
pub mod hosted;
pub mod qemu;
pub mod workspace;

pub use backend::Backend;
pub use guard::{Guard, HarnessError};
pub use hosted::Hosted;
pub use workspace::{bin, scratch_dir};

pub type Result<T> = std::result::Result<T, HarnessError>;
