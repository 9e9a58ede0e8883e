//! `sim`: a software InfiniBand fabric (feature `sim`).
//!
//! A [`SimFabric`] is one subnet behind one switch. Each [`SimPort`] plugged
//! into it implements [`crate::Verbs`] and [`crate::Hca`] with one UD QP and
//! a registered buffer region (a [`ring::Window`]). A send is "DMA'd" with a
//! window-to-window copy straight from the sender's TX slot into the
//! receiver's oldest posted RX slot, behind a 40-byte GRH, the way an HCA
//! would do it.
//!
//! What is modelled:
//! - GIDs, LIDs, fabric-assigned QPNs (reused round robin, see
//!   [`SimFabric::with_qpn_space`]), the port MTU (oversize sends complete
//!   with `LocalLength`);
//! - P_Key checks (IBA 10.9.3: same partition, at least one full member) and
//!   Q_Key checks at the receiver; the destination QPN for unicast;
//! - multicast groups keyed by MGID, scoped to the partition named in MGID
//!   bytes 4..6 (the IPoIB convention); a send to a group reaches every
//!   member except the sender;
//! - asynchronous path resolution and joins, answered on the CQ;
//! - CQ arming with a notifier that fires once per arm;
//! - seeded fault injection ([`FaultConfig`]): loss, corruption (an ICRC
//!   failure at the receiver), duplication and reordering;
//! - counters per port ([`PortStats`]) and for the fabric ([`FabricStats`]);
//! - RC connections (connected mode, [`crate::rc::RcVerbs`]), once a port
//!   turns it on with [`SimPort::enable_rc`]: see the `rc` module.
//!
//! Delivery is synchronous, inside `post_send`; see the `wire` module for
//! when packets held back by the reorder fault are released.

mod config;
mod entry;
mod error;
mod fabric;
mod fault;
mod grh;
mod mcast;
mod port;
mod qpn;
mod rc;
mod stats;
mod wire;

pub use config::{PortConfig, LINK_LOCAL_PREFIX};
pub use entry::Notifier;
pub use error::SimError;
pub use fabric::{SimFabric, QPN_BASE, QPN_SPACE};
pub use fault::FaultConfig;
pub use grh::{GrhError, GrhRepr, HOP_LIMIT, NEXT_HEADER_BTH};
pub use mcast::mgid_pkey;
pub use port::SimPort;
pub use rc::{RcSetup, RcStats, CM_TIMEOUT, RETRY_COUNT};
pub use stats::{FabricStats, PortStats};
