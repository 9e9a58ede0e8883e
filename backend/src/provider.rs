//! The fabric the back end serves guests on, and one guest's port on it.
//! `Port` forwards the `Verbs` contract to the provider behind it, so the
//! back half does not care which one it is.

use std::fmt;
use std::sync::Arc;

use ivshmem::EventFd;
use std::os::fd::{AsRawFd, BorrowedFd};

use verbs_shim::back::GuestSetup;
use verbs_shim::rdma::{RdmaConfig, RdmaContext, RdmaPort};
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{
    Completion, DestHandle, Gid, Hca, HcaError, IbMtu, PKey, PortAttr, PostError, RxSlot, RxSlots,
    SlotBuffers, SlotLayout, TxSlot, TxSlots, UdDest, Verbs,
};

use crate::config::{Config, GuestConfig, ProviderConfig};
use crate::limits::{QpGauge, QpLease};

/// Why the fabric or a port could not be opened.
#[derive(Debug)]
pub struct ProviderError(pub String);

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProviderError {}

/// The fabric.
#[derive(Clone)]
pub enum Fabric {
    Sim(SimFabric),
    Rdma(RdmaContext),
}

/// One guest's (or the gateway's) port on the fabric.
pub struct Port {
    kind: PortKind,
    /// A guest's place in its seat's QP count, given back with the port.
    _lease: Option<QpLease>,
}

/// Boxed: the two differ in size, and a port is made once per connection.
enum PortKind {
    Sim(Box<SimPort>),
    Rdma(Box<RdmaPort>),
}

impl Port {
    /// Connected mode over the guest's big-slot area
    /// (`BackHalf::rc_region`), with at most `max_conns` connections: RC on
    /// the sim fabric, or RC QPs set up with librdmacm on rdma (the big
    /// slots registered in place, zero copy). If this fails the back half
    /// does not agree to connected mode and the guest stays in datagram
    /// mode.
    pub fn enable_rc(
        &mut self,
        region: ring::Window,
        big: verbs_shim::rc::BigLayout,
        max_conns: usize,
    ) -> Result<(), ProviderError> {
        match &mut self.kind {
            PortKind::Sim(p) => p
                .enable_rc(verbs_shim::sim::RcSetup {
                    big,
                    region,
                    max_conns,
                })
                .map_err(|e| ProviderError(format!("connected mode refused: {e}"))),
            PortKind::Rdma(p) => p
                .enable_rc(region, big, max_conns)
                .map_err(|e| ProviderError(format!("connected mode refused: {e}"))),
        }
    }

    fn new(kind: PortKind, lease: Option<QpLease>) -> Port {
        Port {
            kind,
            _lease: lease,
        }
    }

    /// A descriptor that becomes readable when the port has completions,
    /// for ports that have one (rdma's completion channel). Sim ports wake
    /// their seat through the notifier instead.
    pub fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            PortKind::Sim(_) => None,
            // SAFETY: the completion channel's descriptor lives as long as
            // the port, and the borrow cannot outlive `self`.
            PortKind::Rdma(p) => Some(unsafe { BorrowedFd::borrow_raw(p.as_raw_fd()) }),
        }
    }

    /// Acknowledges the events that woke us (rdma), so the channel does not
    /// stay readable.
    pub fn ack_events(&mut self) {
        if let PortKind::Rdma(p) = &mut self.kind {
            if let Err(e) = p.ack_events() {
                log::warn!("rdma: cannot acknowledge CQ events: {e}");
            }
        }
    }

    /// Moves the QP to the error state so posted work is flushed (rdma).
    pub fn close(&mut self) {
        if let PortKind::Rdma(p) = &mut self.kind {
            if let Err(e) = p.close() {
                log::warn!("rdma: closing the port failed: {e}");
            }
        }
    }
}

impl Fabric {
    pub fn open(config: &Config) -> Result<Fabric, ProviderError> {
        match &config.provider {
            ProviderConfig::Sim => Ok(Fabric::Sim(SimFabric::new(FaultConfig::NONE))),
            ProviderConfig::Rdma {
                device,
                port,
                gid_index,
            } => {
                let rdma = RdmaConfig {
                    device: device.clone(),
                    port: *port,
                    gid_index: *gid_index,
                    ..RdmaConfig::default()
                };
                let ctx = RdmaContext::open(&rdma)
                    .map_err(|e| ProviderError(format!("rdma provider: {e}")))?;
                log::info!(
                    "rdma: {} port {} gid[{}] {} lid {} mtu {}",
                    ctx.device_name(),
                    ctx.port_num(),
                    ctx.gid_index(),
                    ctx.gid(),
                    ctx.lid().0,
                    ctx.mtu().bytes()
                );
                Ok(Fabric::Rdma(ctx))
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fabric::Sim(_) => "sim",
            Fabric::Rdma(_) => "rdma",
        }
    }

    /// Opens the gateway's own port: an ordinary endpoint on the fabric
    /// with buffers in this process.
    pub fn open_gateway_port(
        &self,
        number: u16,
        pkey: PKey,
        mtu: IbMtu,
        wake: Arc<EventFd>,
    ) -> Result<Port, ProviderError> {
        let slots = SlotLayout {
            tx_count: 256,
            rx_count: 256,
            slot_size: 4096,
        };
        let region = ring::Window::new_heap(slots.region_len());
        match self {
            Fabric::Sim(fabric) => {
                let mut config = PortConfig::with_layout(number, pkey, slots);
                config.mtu = mtu;
                config.region = region;
                let mut port = fabric
                    .add_port(config)
                    .map_err(|e| ProviderError(format!("gateway: cannot add a sim port: {e}")))?;
                port.set_notifier(Some(Arc::new(move || {
                    let _ = wake.notify();
                })));
                Ok(Port::new(PortKind::Sim(Box::new(port)), None))
            }
            Fabric::Rdma(ctx) => {
                let port = ctx.open_port_in(region, slots, pkey).map_err(|e| {
                    ProviderError(format!("gateway: cannot open an rdma port: {e}"))
                })?;
                // Finished address resolutions wake the gateway.
                port.set_notifier(Some(Arc::new(move || {
                    let _ = wake.notify();
                })));
                Ok(Port::new(PortKind::Rdma(Box::new(port)), None))
            }
        }
    }

    /// Opens the port for seat `seat` over the guest's buffer area, in the
    /// guest's partition (its first P_Key). `wake` is written when
    /// completions arrive and the port was armed, and (rdma) when an
    /// address resolution finishes. Refused when the seat already has
    /// `max_qps` QPs open (`qps` counts them and the refusals).
    pub fn open_port(
        &self,
        seat: usize,
        guest: &GuestConfig,
        setup: &GuestSetup,
        mtu: IbMtu,
        wake: Arc<EventFd>,
        qps: &QpGauge,
    ) -> Result<Port, ProviderError> {
        let max = guest.limits.max_qps;
        let lease = qps.lease(max).ok_or_else(|| {
            ProviderError(format!(
                "guest {}: refused a new QP: {} open, max_qps {max} ({} refused so far)",
                guest.name,
                qps.open(),
                qps.refused()
            ))
        })?;
        let kind = self.open_port_kind(seat, guest, setup, mtu, wake)?;
        Ok(Port::new(kind, Some(lease)))
    }

    fn open_port_kind(
        &self,
        seat: usize,
        guest: &GuestConfig,
        setup: &GuestSetup,
        mtu: IbMtu,
        wake: Arc<EventFd>,
    ) -> Result<PortKind, ProviderError> {
        match self {
            Fabric::Sim(fabric) => {
                let n =
                    u16::try_from(seat + 1).map_err(|_| ProviderError("too many guests".into()))?;
                let mut config = PortConfig::with_layout(n, guest_pkey(guest), setup.slots);
                config.mtu = mtu;
                config.region = setup.region.clone();
                let mut port = fabric.add_port(config).map_err(|e| {
                    ProviderError(format!("guest {}: cannot add a sim port: {e}", guest.name))
                })?;
                port.set_notifier(Some(Arc::new(move || {
                    let _ = wake.notify();
                })));
                Ok(PortKind::Sim(Box::new(port)))
            }
            Fabric::Rdma(ctx) => {
                let _ = mtu;
                let port = ctx
                    .open_port_in(setup.region.clone(), setup.slots, guest_pkey(guest))
                    .map_err(|e| {
                        ProviderError(format!(
                            "guest {}: cannot open an rdma port: {e}",
                            guest.name
                        ))
                    })?;
                // Finished address resolutions wake the seat.
                port.set_notifier(Some(Arc::new(move || {
                    let _ = wake.notify();
                })));
                Ok(PortKind::Rdma(Box::new(port)))
            }
        }
    }
}

macro_rules! forward {
    (&$self:ident, $p:ident => $e:expr) => {
        match &$self.kind {
            PortKind::Sim($p) => $e,
            PortKind::Rdma($p) => $e,
        }
    };
    ($self:ident, $p:ident => $e:expr) => {
        match &mut $self.kind {
            PortKind::Sim($p) => $e,
            PortKind::Rdma($p) => $e,
        }
    };
}

impl Hca for Port {
    fn buffers(&mut self) -> SlotBuffers<'_> {
        forward!(self, p => p.buffers())
    }
}

impl Verbs for Port {
    fn port_attr(&self) -> PortAttr {
        forward!(&self, p => p.port_attr())
    }
    fn offloads(&self) -> verbs_shim::Offloads {
        forward!(&self, p => p.offloads())
    }
    fn layout(&self) -> SlotLayout {
        forward!(&self, p => p.layout())
    }
    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)> {
        forward!(self, p => p.take_slots())
    }
    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>> {
        forward!(self, p => p.post_send(slot, len, dest))
    }
    fn post_send_with_head(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
        head: &[u8],
    ) -> Result<(), PostError<TxSlot>> {
        forward!(self, p => p.post_send_with_head(slot, len, dest, head))
    }
    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>> {
        forward!(self, p => p.post_recv(slot))
    }
    fn post_sends(
        &mut self,
        sends: &mut dyn Iterator<Item = verbs_shim::SendWr>,
        refused: &mut Vec<PostError<TxSlot>>,
    ) {
        forward!(self, p => p.post_sends(sends, refused))
    }
    fn post_recvs(
        &mut self,
        slots: &mut dyn Iterator<Item = RxSlot>,
        refused: &mut Vec<PostError<RxSlot>>,
    ) {
        forward!(self, p => p.post_recvs(slots, refused))
    }
    fn flush(&mut self) -> Result<(), HcaError> {
        forward!(self, p => p.flush())
    }
    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError> {
        forward!(self, p => p.poll_cq())
    }
    fn arm_cq(&mut self) -> Result<bool, HcaError> {
        forward!(self, p => p.arm_cq())
    }
    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        forward!(self, p => p.attach_mcast(mgid))
    }
    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        forward!(self, p => p.detach_mcast(mgid))
    }
    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError> {
        forward!(self, p => p.resolve(dgid))
    }
    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError> {
        forward!(self, p => p.release_dest(handle))
    }
    fn rc(&mut self) -> Option<&mut dyn verbs_shim::rc::RcVerbs> {
        forward!(self, p => p.rc())
    }
}

/// The P_Key of a guest's port: the first of its configured keys (the
/// configuration always has one; the default partition otherwise).
pub fn guest_pkey(guest: &GuestConfig) -> PKey {
    guest.pkeys.first().map_or(PKey::DEFAULT, |&k| PKey(k))
}

/// The IB MTU enum for a byte count the configuration already checked.
pub fn ib_mtu(bytes: usize) -> IbMtu {
    IbMtu::from_bytes(bytes).unwrap_or(IbMtu::Mtu2048)
}

#[cfg(test)]
mod tests;
