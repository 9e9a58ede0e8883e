//! The back half of the channel: serves one guest's window over any
//! [`Verbs`] provider.
//!
//! Everything the guest writes is an allegation. Each descriptor is copied
//! out of the window once and checked against this guest's own ranges: its
//! slot indices, lengths within its slot size, and destination handles from
//! its own table. A violation is logged and counted, and the guest is
//! disconnected. Nothing the guest writes can make this code panic or touch
//! memory outside the guest's window: all access goes through [`Window`].
//!
//! [`Verbs`]: crate::Verbs

mod ctrl;
mod dests;
mod filter;
mod limits;
mod rc;
mod serve;
mod tap;
mod violation;

use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use ring::desc::{CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse};
use ring::header::features;
use ring::{BackRing, Header, Layout, PortBlock, RingError, State, Window};

pub use filter::{BoxedTxFilter, SenderPort, TxFilter, TxVerdict, FILTER_HEAD_LEN};
pub use limits::Refusal;
pub use tap::{Tap, TapEvent};
pub use violation::{BackStats, Violation, ViolationKind};

use crate::hca::{HcaError, Verbs};
use crate::notify::Notify;
use crate::slot::{RxSlot, SlotLayout, TxSlot};
use crate::types::Gid;

/// Limits the back end applies to every guest.
#[derive(Clone, Copy, Debug)]
pub struct BackConfig {
    /// Announced in the header; a new value each time a back end starts.
    pub epoch: u32,
    /// Most destination handles one guest may hold.
    pub max_dests: usize,
    /// Most requests taken from each ring in one service pass.
    pub batch: usize,
    /// Most multicast groups one guest may be attached to (each costs a
    /// fabric group, and on RoCE a socket, in the back end).
    pub max_mcast_groups: usize,
    /// Most `RESOLVE`s of one guest in progress at once; the rest are
    /// refused until answers come back.
    pub max_pending_resolves: usize,
    /// Offer connected mode at InitWait (`docs/connected-mode.md`, §5).
    /// Offer it only if the provider built for the guest will have RC
    /// ([`crate::Verbs::rc`]); if it then has not, the guest is told at
    /// Connected that it was not agreed, and stays in datagram mode.
    pub connected_mode: bool,
    /// Most RC connections one guest may hold (active, passive, requests
    /// and broken ones it has not let go of).
    pub max_rc_conns: usize,
}

impl Default for BackConfig {
    fn default() -> Self {
        BackConfig {
            epoch: 1,
            max_dests: 1024,
            batch: 64,
            max_mcast_groups: 64,
            max_pending_resolves: 16,
            connected_mode: false,
            max_rc_conns: 64,
        }
    }
}

/// Why the back half stopped serving the guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BackError {
    /// The window is too small to hold even the header.
    WindowTooSmall,
    /// The guest broke the protocol and was disconnected.
    Violation(Violation),
    /// The guest closed the channel.
    GuestClosed,
    /// `connect` was called before the guest initialised, or twice.
    NotReady,
    /// The provider does not match the guest's layout.
    ProviderMismatch,
    /// The provider failed.
    Provider(HcaError),
    /// The back end could not open a port for the guest (a P_Key not in
    /// the port's table, the guest's QP limit, a device out of resources);
    /// the reason is logged where it was found.
    PortRefused,
    /// The back end is shutting down.
    Shutdown,
}

impl fmt::Display for BackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackError::WindowTooSmall => f.write_str("window smaller than the header page"),
            BackError::Violation(v) => write!(f, "guest disconnected: {v}"),
            BackError::GuestClosed => f.write_str("guest closed the channel"),
            BackError::NotReady => f.write_str("guest has not initialised the channel"),
            BackError::ProviderMismatch => {
                f.write_str("provider layout does not match the guest's")
            }
            BackError::Provider(e) => write!(f, "provider failed: {e}"),
            BackError::PortRefused => f.write_str("no port could be opened for the guest"),
            BackError::Shutdown => f.write_str("back end shutting down"),
        }
    }
}

impl core::error::Error for BackError {}

/// What a provider for this guest must be built over: the guest's buffer
/// area (to register once) and its slot layout.
#[derive(Clone)]
pub struct GuestSetup {
    pub region: Window,
    pub slots: SlotLayout,
    pub layout: Layout,
}

/// What one guest holds in the back half ([`BackHalf::held`]).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Held {
    pub dests: usize,
    pub mcast_groups: usize,
    pub pending_resolves: usize,
}

/// A pending control request, answered in request order.
struct CtrlPending {
    cookie: u32,
    op: u16,
    gid: [u8; 16],
    response: Option<CtrlResponse>,
}

/// State while the guest is connected.
struct Served<V: Verbs> {
    provider: V,
    /// The guest's buffer area (for the tap only).
    region: Window,
    slots: SlotLayout,
    ctrl: BackRing<CtrlRequest, CtrlResponse>,
    tx: BackRing<TxRequest, TxResponse>,
    rx: BackRing<RxRequest, RxResponse>,
    /// A slot's token is here while the guest owns the slot.
    tx_tokens: Vec<Option<TxSlot>>,
    rx_tokens: Vec<Option<RxSlot>>,
    dests: dests::DestTable,
    ctrl_pending: VecDeque<CtrlPending>,
    /// The groups the provider says this guest is attached to.
    mcast_groups: BTreeSet<Gid>,
    max_mcast_groups: usize,
    max_pending_resolves: usize,
    /// Connected mode, when negotiated and agreed.
    rc: Option<rc::RcServed>,
    /// Sends and receives checked and waiting to be posted as one batch at
    /// the end of their run (kept for their capacity).
    send_batch: Vec<crate::SendWr>,
    recv_batch: Vec<RxSlot>,
}

enum Phase<V: Verbs> {
    WaitingForGuest,
    /// Parameters read and checked; waiting for `connect`.
    Setup(GuestSetup),
    Connected(Box<Served<V>>),
    Closed(BackError),
}

/// Serves one guest window.
pub struct BackHalf<V: Verbs, N: Notify> {
    window: Window,
    header: Header,
    notify: N,
    config: BackConfig,
    phase: Phase<V>,
    stats: BackStats,
    tapper: tap::Tapper,
}

impl<V: Verbs, N: Notify> BackHalf<V, N> {
    /// Starts serving `window`: writes the header and announces InitWait
    /// (CHANNEL.md step 1).
    pub fn new(window: Window, config: BackConfig, notify: N) -> Result<Self, BackError> {
        let header = Header::new(&window).map_err(|_| BackError::WindowTooSmall)?;
        let offered = if config.connected_mode {
            features::CONNECTED_MODE
        } else {
            0
        };
        header.init_backend_offering(config.epoch, &PortBlock::default(), offered);
        notify.notify();
        Ok(BackHalf {
            window,
            header,
            notify,
            config,
            phase: Phase::WaitingForGuest,
            stats: BackStats {
                interrupts: 1,
                ..BackStats::default()
            },
            tapper: tap::Tapper::default(),
        })
    }

    /// Installs (or removes) a tap that sees every packet this guest sends
    /// and receives.
    pub fn set_tap(&mut self, tap: Option<Tap>) {
        self.tapper.tap = tap;
    }

    /// Installs (or removes) a filter that checks every frame this guest
    /// sends before it is posted (see [`TxFilter`]).
    pub fn set_tx_filter(&mut self, filter: Option<BoxedTxFilter>) {
        self.tapper.filter = filter;
    }

    pub fn stats(&self) -> &BackStats {
        &self.stats
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected(_))
    }

    /// Why serving stopped, if it did.
    pub fn closed_reason(&self) -> Option<BackError> {
        match self.phase {
            Phase::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// What this guest holds now, while connected: destination handles,
    /// multicast groups and address resolutions in progress.
    pub fn held(&self) -> Option<Held> {
        match &self.phase {
            Phase::Connected(s) => Some(Held {
                dests: s.dests.held(),
                mcast_groups: s.mcast_groups.len(),
                pending_resolves: s.resolves_in_progress(),
            }),
            _ => None,
        }
    }

    /// Connected mode's connections this guest holds and events waiting
    /// for a credit, while connected with connected mode agreed.
    pub fn rc_held(&self) -> Option<(usize, usize)> {
        match &self.phase {
            Phase::Connected(s) => s.rc.as_ref().map(|r| (r.held_conns(), r.held_events())),
            _ => None,
        }
    }

    /// Connected mode's big-slot area of the guest's window and its shape,
    /// once the guest asked for it (from [`poll_guest_init`] on): build the
    /// provider's RC over it (the sim: `SimPort::enable_rc`).
    ///
    /// [`poll_guest_init`]: Self::poll_guest_init
    pub fn rc_region(&self) -> Option<(Window, crate::rc::BigLayout)> {
        let layout = match &self.phase {
            Phase::Setup(s) => &s.layout,
            _ => return None,
        };
        let big = layout.big.as_ref()?;
        let region = self.window.sub(big.area.start, big.area.len()).ok()?;
        let shape = crate::rc::BigLayout {
            tx_count: big.params.tx_slots,
            rx_count: big.params.rx_slots,
            slot_size: big.params.slot_size,
        };
        Some((region, shape))
    }

    /// The provider, while connected.
    pub fn provider(&self) -> Option<&V> {
        match &self.phase {
            Phase::Connected(s) => Some(&s.provider),
            _ => None,
        }
    }

    /// The provider, while connected, for provider-specific upkeep (for
    /// example acknowledging completion events).
    pub fn provider_mut(&mut self) -> Option<&mut V> {
        match &mut self.phase {
            Phase::Connected(s) => Some(&mut s.provider),
            _ => None,
        }
    }

    /// Checks whether the guest has written its parameters (CHANNEL.md step
    /// 2). Returns what the provider must be built over, once.
    pub fn poll_guest_init(&mut self) -> Result<Option<GuestSetup>, BackError> {
        match &self.phase {
            Phase::WaitingForGuest => {}
            Phase::Setup(s) => return Ok(Some(s.clone())),
            Phase::Connected(_) => return Ok(None),
            Phase::Closed(e) => return Err(*e),
        }
        if self.header.guest_state() != State::Initialised {
            return Ok(None);
        }
        let guest_epoch = self.header.guest_epoch();
        if guest_epoch != self.config.epoch {
            return Err(self.disconnect(Violation::EpochMismatch {
                guest: guest_epoch,
                backend: self.config.epoch,
            }));
        }
        // Copy the parameters once; everything below uses the copy.
        let params = self.header.read_params();
        let big = match self.guest_big_params() {
            Ok(big) => big,
            Err(v) => return Err(self.disconnect(v)),
        };
        let layout = match Layout::compute_with(params, big, self.window.len()) {
            Ok(l) => l,
            Err(e) => return Err(self.disconnect(Violation::BadParams(e))),
        };
        let region = match self.window.sub(layout.buffers.start, layout.buffers.len()) {
            Ok(r) => r,
            Err(_) => {
                return Err(
                    self.disconnect(Violation::BadParams(ring::LayoutError::DoesNotFit {
                        needed: layout.buffers.end,
                        window_len: self.window.len(),
                    })),
                )
            }
        };
        let setup = GuestSetup {
            region,
            slots: SlotLayout {
                tx_count: params.tx_slots,
                rx_count: params.rx_slots,
                slot_size: params.slot_size,
            },
            layout,
        };
        self.phase = Phase::Setup(setup.clone());
        Ok(Some(setup))
    }

    /// The guest's features word, checked against what was offered, and
    /// connected mode's parameters if it asked for it (copied once).
    fn guest_big_params(&self) -> Result<Option<ring::BigParams>, Violation> {
        let asked = self.header.guest_features();
        let unknown = asked & !features::GUEST_KNOWN;
        if unknown != 0 {
            return Err(Violation::UnknownFeature { bits: unknown });
        }
        if asked & features::CONNECTED_MODE == 0 {
            return Ok(None);
        }
        if !self.config.connected_mode {
            return Err(Violation::FeatureNotOffered {
                bits: features::CONNECTED_MODE,
            });
        }
        let (big, reserved_clear) = self.header.read_big_params();
        if !reserved_clear {
            return Err(Violation::ReservedBits { ring: "header" });
        }
        Ok(Some(big))
    }

    /// Connected mode's part of the service, if the guest asked for it and
    /// the provider can: the CM ring attached and the big-slot tokens
    /// taken. `None` (not agreed) otherwise.
    fn serve_rc(&self, setup: &GuestSetup, provider: &mut V) -> Option<rc::RcServed> {
        let big = setup.layout.big.as_ref()?;
        if self.tapper.filter.is_some() {
            // RC sends would pass port security by: not agreed.
            log::warn!("connected mode not agreed: the seat has a TX filter");
            return None;
        }
        let expected = crate::rc::BigLayout {
            tx_count: big.params.tx_slots,
            rx_count: big.params.rx_slots,
            slot_size: big.params.slot_size,
        };
        let Some(rcv) = provider.rc() else {
            log::warn!("connected mode not agreed: the provider has no RC");
            return None;
        };
        if rcv.rc_caps().map(|c| c.big) != Some(expected) {
            log::warn!("connected mode not agreed: the provider's big slots differ");
            return None;
        }
        let area = self.window.sub(big.area.start, big.area.len()).ok()?;
        let tokens = rcv.take_big_slots()?;
        let win = self.window.sub(big.cm.start, big.cm.len()).ok()?;
        let mut cm = BackRing::attach(win, big.params.cm_order).ok()?;
        cm.init();
        Some(rc::RcServed::new(
            cm,
            expected,
            area,
            tokens,
            self.config.max_rc_conns,
        ))
    }

    /// Finishes the handshake with a provider built over
    /// [`GuestSetup::region`] (CHANNEL.md step 3).
    pub fn connect(&mut self, mut provider: V) -> Result<(), BackError> {
        let setup = match &self.phase {
            Phase::Setup(s) => s.clone(),
            _ => return Err(BackError::NotReady),
        };
        if provider.layout() != setup.slots {
            return Err(BackError::ProviderMismatch);
        }
        let Some((tx_slots, rx_slots)) = provider.take_slots() else {
            return Err(BackError::ProviderMismatch);
        };
        let params = setup.layout.params;
        let ring = |r: &core::ops::Range<usize>| -> Result<Window, BackError> {
            self.window.sub(r.start, r.len()).map_err(|e| {
                BackError::Violation(Violation::BadParams(ring::LayoutError::DoesNotFit {
                    needed: e.offset.saturating_add(e.len),
                    window_len: e.window_len,
                }))
            })
        };
        let bad_ring = |_: RingError| BackError::ProviderMismatch;
        let mut ctrl =
            BackRing::attach(ring(&setup.layout.ctrl)?, params.ctrl_order).map_err(bad_ring)?;
        let mut tx =
            BackRing::attach(ring(&setup.layout.tx)?, params.tx_order).map_err(bad_ring)?;
        let mut rx =
            BackRing::attach(ring(&setup.layout.rx)?, params.rx_order).map_err(bad_ring)?;
        ctrl.init();
        tx.init();
        rx.init();
        let rc = self.serve_rc(&setup, &mut provider);
        let port = provider.port_attr();
        // Before Connected (Release), like the port block: the offloads,
        // and connected mode if agreed.
        let agreed = if rc.is_some() {
            features::CONNECTED_MODE
        } else {
            0
        };
        self.header
            .set_backend_features(provider.offloads().to_features() | agreed);
        self.header.write_port(&PortBlock {
            gid: port.gid.0,
            lid: port.lid.0,
            pkey: port.pkey.0,
            qpn: port.qpn.get(),
            qkey: port.qkey.0,
            mtu: port.mtu.to_code(),
            state: port.state.to_code(),
            _reserved: [0; 2],
        });
        self.phase = Phase::Connected(Box::new(Served {
            provider,
            region: setup.region.clone(),
            slots: setup.slots,
            ctrl,
            tx,
            rx,
            tx_tokens: tx_slots.map(Some).collect(),
            rx_tokens: rx_slots.map(Some).collect(),
            dests: dests::DestTable::new(self.config.max_dests),
            ctrl_pending: VecDeque::new(),
            mcast_groups: BTreeSet::new(),
            max_mcast_groups: self.config.max_mcast_groups,
            max_pending_resolves: self.config.max_pending_resolves,
            rc,
            send_batch: Vec::new(),
            recv_batch: Vec::new(),
        }));
        self.header.set_backend_state(State::Connected);
        self.stats.interrupts += 1;
        self.notify.notify();
        Ok(())
    }

    /// The back end is shutting down: tells the guest (state Closed and a
    /// notification) and releases the provider.
    pub fn shutdown(&mut self) {
        if !matches!(self.phase, Phase::Closed(_)) {
            self.close(BackError::Shutdown);
        }
    }

    /// Logs, counts and disconnects. Returns the error to hand up.
    fn disconnect(&mut self, v: Violation) -> BackError {
        log::warn!("disconnecting guest: {v}");
        self.stats.violations[v.kind() as usize] += 1;
        self.close(BackError::Violation(v))
    }

    /// Tears the guest down: the provider (QP, MR, handles) is dropped and the
    /// header says Closed.
    fn close(&mut self, why: BackError) -> BackError {
        self.phase = Phase::Closed(why);
        self.header.set_backend_state(State::Closed);
        self.stats.interrupts += 1;
        self.notify.notify();
        why
    }
}
