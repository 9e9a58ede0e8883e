//! One in-process guest: a smoltcp interface on an `IpoibDevice`, over a
//! `FrontHca`, over a shared window served by its own `BackHalf` on a sim
//! port. The same pieces a real guest and back end use, in one process.

use std::error::Error;

use ipoib::{Capture, IpoibConfig, IpoibDevice, IpoibError};
use ring::{Layout, LayoutParams, Window};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};
use verbs_shim::back::{BackConfig, BackHalf};

use crate::capture::SharedCapture;
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{PortConfig, RcSetup, SimFabric, SimPort};
use verbs_shim::{HcaError, IbMtu, PKey, QKey};

pub type BoxError = Box<dyn Error + Send + Sync>;

/// The back end's half of an in-process channel.
pub type SimBack = BackHalf<SimPort, NoNotify>;
/// The guest's half of an in-process channel.
pub type SimFront = FrontHca<NoNotify>;
/// A connected channel: the window and both halves.
pub type Channel = (Window, SimBack, SimFront);

/// How to build a guest.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    /// Port number on the fabric: GID fe80::n, LID n.
    pub port: u16,
    pub ip: Ipv4Cidr,
    pub pkey: PKey,
    pub mtu: IbMtu,
    pub params: LayoutParams,
    /// Send with this Q_Key instead of the port's.
    pub qkey_override: Option<QKey>,
    /// A static IPv6 address besides the link-local one.
    pub ip6: Option<Ipv6Cidr>,
    /// Connected mode (RFC 4755) with this IP MTU: the back end offers it,
    /// the channel asks for it with [`CONNECTED_BIG`] big slots, and the
    /// device uses it. `None`: datagram mode only, as an old guest.
    pub connected_mtu: Option<u32>,
}

/// The big-slot pool of a connected-mode guest: 16 TX and 32 RX slots of
/// 64 KiB.
pub const CONNECTED_BIG: ring::BigParams = ring::BigParams::DEFAULT;

impl GuestSpec {
    /// Guest `n` at 10.77.0.n/24 in the default partition.
    pub fn new(n: u8) -> GuestSpec {
        GuestSpec {
            port: u16::from(n),
            ip: Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, n), 24),
            pkey: PKey::DEFAULT,
            mtu: IbMtu::Mtu2048,
            params: LayoutParams {
                ctrl_order: 4,
                tx_order: 7,
                rx_order: 7,
                tx_slots: 128,
                rx_slots: 128,
                slot_size: 4096,
            },
            qkey_override: None,
            ip6: None,
            connected_mtu: None,
        }
    }

    /// Connected mode with IP MTU `mtu` (65520 as Linux). The TX and RX
    /// rings grow to carry the big slots too.
    pub fn with_connected_mode(mut self, mtu: u32) -> GuestSpec {
        self.connected_mtu = Some(mtu);
        self.params.tx_order = self.params.tx_order.max(8);
        self.params.rx_order = self.params.rx_order.max(8);
        self
    }

    /// The big-slot parameters the channel asks for, if any.
    fn big(&self) -> Option<ring::BigParams> {
        self.connected_mtu.map(|_| CONNECTED_BIG)
    }

    /// Gives the guest `fd77::n/64` besides its link-local address.
    pub fn with_ip6(mut self) -> GuestSpec {
        let n = self.port;
        self.ip6 = Some(Ipv6Cidr::new(
            Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, n),
            64,
        ));
        self
    }

    pub fn with_pkey(mut self, pkey: PKey) -> GuestSpec {
        self.pkey = pkey;
        self
    }

    pub fn with_qkey_override(mut self, qkey: QKey) -> GuestSpec {
        self.qkey_override = Some(qkey);
        self
    }

    pub fn ipv4(&self) -> Ipv4Address {
        self.ip.address()
    }
}

/// The guest's two halves: what runs in the guest and what runs in the
/// back end.
pub struct Guest<C: Capture = SharedCapture> {
    pub spec: GuestSpec,
    pub fabric: SimFabric,
    /// Times the guest re-attached after its back end went away.
    pub reattaches: u64,
    pub window: Window,
    pub back: BackHalf<SimPort, NoNotify>,
    pub device: IpoibDevice<FrontHca<NoNotify>, C>,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
}

/// Builds the channel for one guest and connects both ends.
pub fn connect_channel(fabric: &SimFabric, spec: &GuestSpec) -> Result<Channel, BoxError> {
    let window = Window::new_heap(Layout::window_len_with(spec.params, spec.big())?);
    connect_channel_in(fabric, spec, window)
}

/// The back half's configuration for `spec`, announcing `epoch`.
fn back_config(spec: &GuestSpec, epoch: u32) -> BackConfig {
    BackConfig {
        epoch,
        connected_mode: spec.connected_mtu.is_some(),
        ..BackConfig::default()
    }
}

/// The back end's side of the handshake: a sim port over the guest's
/// buffers, with RC over its big slots if it asked for connected mode.
fn provide(fabric: &SimFabric, spec: &GuestSpec, back: &mut SimBack) -> Result<(), BoxError> {
    let Some(setup) = back.poll_guest_init()? else {
        return Ok(());
    };
    let mut port_config = PortConfig::with_layout(spec.port, spec.pkey, setup.slots);
    port_config.mtu = spec.mtu;
    port_config.region = setup.region;
    let mut port = fabric.add_port(port_config)?;
    if let Some((region, big)) = back.rc_region() {
        port.enable_rc(RcSetup {
            big,
            region,
            max_conns: 64,
        })?;
    }
    back.connect(port)?;
    Ok(())
}

/// Like [`connect_channel`], in a window the caller provides.
pub fn connect_channel_in(
    fabric: &SimFabric,
    spec: &GuestSpec,
    window: Window,
) -> Result<Channel, BoxError> {
    let mut back = BackHalf::new(window.clone(), back_config(spec, 1), NoNotify)?;
    let mut front = FrontHca::attach_with(window.clone(), spec.params, spec.big(), NoNotify)?;
    if back.poll_guest_init()?.is_none() {
        return Err("back half did not see the guest initialise".into());
    }
    provide(fabric, spec, &mut back)?;
    if !front.poll_connected()? {
        return Err("front did not see Connected".into());
    }
    Ok((window, back, front))
}

impl Guest<SharedCapture> {
    pub fn new(fabric: &SimFabric, spec: GuestSpec, now: Instant) -> Result<Self, BoxError> {
        Guest::with_capture(fabric, spec, SharedCapture::none(), now)
    }
}

impl<C: Capture> Guest<C> {
    pub fn with_capture(
        fabric: &SimFabric,
        spec: GuestSpec,
        capture: C,
        now: Instant,
    ) -> Result<Self, BoxError> {
        let (window, back, front) = connect_channel(fabric, &spec)?;
        let mut config = IpoibConfig::new(spec.ip);
        config.qkey_override = spec.qkey_override;
        config.ipv6 = spec.ip6;
        config.connected_mtu = spec.connected_mtu;
        let mut device = IpoibDevice::with_capture(front, config, capture)?;
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = u64::from(spec.port);
        let mut iface = Interface::new(iface_config, &mut device, now);
        let link_local = device.ipv6_link_local();
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::Ipv4(spec.ip));
            let _ = addrs.push(IpCidr::Ipv6(Ipv6Cidr::new(link_local, 64)));
            if let Some(ip6) = spec.ip6 {
                let _ = addrs.push(IpCidr::Ipv6(ip6));
            }
        });
        Ok(Guest {
            spec,
            fabric: fabric.clone(),
            reattaches: 0,
            window,
            back,
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
        })
    }

    /// Replaces the back half with a fresh one announcing `epoch`, as a
    /// restarted back end would: the old port and its posted buffers are
    /// gone, and the guest has to attach again.
    pub fn restart_backend(&mut self, epoch: u32) -> Result<(), BoxError> {
        let config = back_config(&self.spec, epoch);
        self.back = BackHalf::new(self.window.clone(), config, NoNotify)?;
        Ok(())
    }

    /// The guest's reaction to a lost back end: attach to the new one and
    /// move the interface onto it. Returns false while the back end is not
    /// ready yet.
    fn reattach(&mut self) -> Result<bool, BoxError> {
        let big = self.spec.big();
        let mut front =
            match FrontHca::attach_with(self.window.clone(), self.spec.params, big, NoNotify) {
                Ok(f) => f,
                Err(verbs_shim::front::AttachError::NotReady) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
        // The back end's side of the handshake (in a real deployment this
        // runs in the daemon when the guest's doorbell rings).
        if !self.back.is_connected() {
            provide(&self.fabric, &self.spec, &mut self.back)?;
        }
        if !front.poll_connected()? {
            return Ok(false);
        }
        self.device.replace_device(front)?;
        self.reattaches += 1;
        Ok(true)
    }

    /// Runs the device, re-attaching if the back end went away.
    fn service_device(&mut self, now: Instant) -> Result<bool, BoxError> {
        match self.device.service(now) {
            Ok(p) => Ok(p),
            Err(IpoibError::Device(HcaError::Disconnected)) => self.reattach(),
            Err(e) => Err(e.into()),
        }
    }

    /// One round: its back half (what arrived since its last turn), the
    /// guest stack, then the back half again (what the stack sent). Returns
    /// true if anything moved.
    pub fn poll(&mut self, now: Instant) -> Result<bool, BoxError> {
        let before = self.device.stats();
        // The back half first as well: what its provider completed since
        // its last turn (another guest's packets to this one) reaches the
        // guest in this round, as with a back end running beside it. With
        // the back half only after the stack, a packet to this guest waited
        // a round for it, and the in-process UDP benchmark refetched more
        // of its code per datagram (I1 misses 6.5 -> 3.4 per datagram,
        // callgrind --cache-sim=yes).
        let mut progress = self.back.service()? > 0;
        progress |= self.service_device(now)?;
        ipoib::poll_interface(&mut self.iface, now, &mut self.device, &mut self.sockets);
        progress |= self.service_device(now)?;
        progress |= self.back.service()? > 0;
        let after = self.device.stats();
        progress |= before.rx_packets != after.rx_packets || before.tx_packets != after.tx_packets;
        Ok(progress)
    }

    /// Joins an IPv4 multicast group on the device and in smoltcp, as
    /// netcore's `NetStack::join_ipv4_group` does.
    pub fn join_ipv4_group(&mut self, group: Ipv4Address) -> Result<(), BoxError> {
        self.device.join_ipv4_group(group)?;
        self.iface
            .join_multicast_group(group)
            .map_err(|e| format!("smoltcp: joining {group}: {e}"))?;
        Ok(())
    }

    /// Leaves an IPv4 multicast group on both.
    pub fn leave_ipv4_group(&mut self, group: Ipv4Address) -> Result<(), BoxError> {
        self.iface
            .leave_multicast_group(group)
            .map_err(|e| format!("smoltcp: leaving {group}: {e}"))?;
        self.device.leave_ipv4_group(group)?;
        Ok(())
    }

    /// When this guest next has timer work.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let a = self.iface.poll_at(now, &self.sockets);
        let b = self.device.poll_at();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
