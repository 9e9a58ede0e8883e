//! What the ibchan device logic needs from xenstore, as a trait, so the same
//! logic runs against xenstored ([`super::xenstore::XsClient`]) and against
//! an in-memory fake in tests.

use std::fmt;

use xen_proto::xs::{ErrorName, XsError};

/// A transaction id; [`NO_TX`] outside a transaction.
pub type Tx = u32;
pub const NO_TX: Tx = 0;

/// Why a xenstore request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// xenstored answered `XS_ERROR` with this errno name. The connection
    /// is fine.
    Remote(ErrorName),
    /// The connection failed, timed out, or xenstored broke the protocol:
    /// the connection is unusable and must be reopened.
    Connection(String),
}

impl StoreError {
    pub fn is(&self, name: ErrorName) -> bool {
        *self == StoreError::Remote(name)
    }

    pub fn is_connection(&self) -> bool {
        matches!(self, StoreError::Connection(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Remote(e) => write!(f, "xenstore error {e:?}"),
            StoreError::Connection(m) => write!(f, "xenstore connection: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<XsError> for StoreError {
    fn from(e: XsError) -> StoreError {
        match e {
            XsError::Remote(name) => StoreError::Remote(name),
            other => StoreError::Connection(other.to_string()),
        }
    }
}

/// A node's permissions: the owner (who may do anything, and whose letter
/// `n` gives everyone else no access) and the domains that may read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perms {
    pub owner: u16,
    pub readers: Vec<u16>,
}

impl Perms {
    /// The `XS_SET_PERMS` arguments: `n<owner>`, then `r<domid>` each.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![format!("n{}", self.owner)];
        args.extend(self.readers.iter().map(|r| format!("r{r}")));
        args
    }
}

/// The xenstore requests the back end makes.
pub trait Store {
    /// A node's value; `None` if it does not exist.
    fn read(&mut self, tx: Tx, path: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError>;
    fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), StoreError>;
    /// Removes a node and everything below it; a missing node is fine.
    fn rm(&mut self, tx: Tx, path: &str) -> Result<(), StoreError>;
    /// A node's children; `None` if it does not exist.
    fn directory(&mut self, tx: Tx, path: &str) -> Result<Option<Vec<String>>, StoreError>;
    fn set_perms(&mut self, tx: Tx, path: &str, perms: &Perms) -> Result<(), StoreError>;
    /// Watches `path` (and everything below it); xenstored fires once at
    /// once, then on every change.
    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError>;
    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError>;
    fn transaction_start(&mut self) -> Result<Tx, StoreError>;
    /// Ends `tx`; `Ok(false)` if a commit conflicted (`EAGAIN`): start over.
    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<bool, StoreError>;
    fn is_domain_introduced(&mut self, domid: u16) -> Result<bool, StoreError>;
}
