//! The guest side of the channel: a [`Verbs`]/[`Hca`] provider that turns
//! posts into ring requests and ring responses into completions.
//!
//! The guest does not trust the back end either: every response is copied
//! once and checked (slot in range and actually in flight, lengths within the
//! slot, cookies that match a request). A violation closes the channel,
//! is counted by kind ([`FrontStats::faults`]) and surfaces as
//! [`HcaError::PeerViolation`] with a typed [`PeerFault`].
//!
//! [`Verbs`]: crate::Verbs
//! [`Hca`]: crate::Hca
//! [`HcaError::PeerViolation`]: crate::HcaError::PeerViolation
//! [`PeerFault`]: crate::PeerFault

mod lifecycle;
mod rc;
mod verbs;

pub use rc::EVENT_CREDITS;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use ring::desc::{CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse};
use ring::header::features;
use ring::{
    BigParams, FrontRing, Header, Layout, LayoutError, LayoutParams, RingError, State, Window,
};

use crate::notify::Notify;
use crate::peer_fault::{PeerFault, PeerFaultCounts};
use crate::slot::SlotLayout;
use crate::types::{Gid, PortAttr};

/// Counters kept by the guest side.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FrontStats {
    pub tx_posted: u64,
    pub rx_posted: u64,
    pub tx_completions: u64,
    pub rx_completions: u64,
    pub ctrl_requests: u64,
    /// Doorbells rung towards the back end.
    pub doorbells: u64,
    /// Protocol violations seen from the back end (all kinds).
    pub violations: u64,
    /// The same, by kind.
    pub faults: PeerFaultCounts,
}

/// Why attaching to a window failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttachError {
    /// The back end has not initialised the window yet (no magic or not in
    /// InitWait); try again after its notification.
    NotReady,
    /// The window speaks another protocol version.
    BadVersion(u32),
    /// The chosen parameters do not fit the window.
    Layout(LayoutError),
    /// A ring has fewer entries than there are slots for it, so a post could
    /// fail; pick a larger ring order.
    RingSmallerThanSlots {
        ring: &'static str,
    },
    Ring(RingError),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NotReady => f.write_str("back end not ready (no InitWait in header)"),
            AttachError::BadVersion(v) => write!(f, "channel version {v} is not supported"),
            AttachError::Layout(e) => write!(f, "bad channel layout: {e}"),
            AttachError::RingSmallerThanSlots { ring } => {
                write!(f, "{ring} ring has fewer entries than {ring} slots")
            }
            AttachError::Ring(e) => write!(f, "ring setup failed: {e}"),
        }
    }
}

impl core::error::Error for AttachError {}

/// Where the channel stands, from the guest's point of view.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Initialised; waiting for the back end to say Connected.
    Waiting,
    Connected,
    /// Disconnected or broken: in-flight slots are being handed back as
    /// flushed completions.
    Draining(DrainReason),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DrainReason {
    Disconnected,
    Violation(PeerFault),
}

/// A control request waiting for its response.
#[derive(Clone, Copy, Debug)]
struct PendingCtrl {
    cookie: u32,
    op: u16,
    gid: Gid,
}

/// The guest-side provider.
pub struct FrontHca<N: Notify> {
    header: Header,
    layout: Layout,
    slots: SlotLayout,
    buffers: Window,
    ctrl: FrontRing<CtrlRequest, CtrlResponse>,
    tx: FrontRing<TxRequest, TxResponse>,
    rx: FrontRing<RxRequest, RxResponse>,
    notify: N,
    phase: Phase,
    epoch: u32,
    port: PortAttr,
    /// What the back end's provider announced (back-end features).
    offloads: crate::Offloads,
    slots_taken: bool,
    tx_in_flight: Vec<bool>,
    rx_in_flight: Vec<bool>,
    ctrl_pending: VecDeque<PendingCtrl>,
    next_cookie: u32,
    /// Requests pushed since the last flush, per ring.
    unpublished: bool,
    stats: FrontStats,
    /// Connected mode, asked for at attach (dropped at Connected if the
    /// back end did not agree).
    rc: Option<rc::FrontRc>,
    /// Completions read while looking for RC ones, kept for `poll_cq`.
    stash: VecDeque<crate::hca::Completion>,
}

impl<N: Notify> FrontHca<N> {
    /// Performs the guest's half of the handshake (CHANNEL.md step 2) on a
    /// window that the back end has put in InitWait. The channel is usable
    /// once [`FrontHca::poll_connected`] returns `true`.
    pub fn attach(window: Window, params: LayoutParams, notify: N) -> Result<Self, AttachError> {
        Self::attach_with(window, params, None, notify)
    }

    /// [`FrontHca::attach`], asking for connected mode with `big` if the
    /// back end offers it (`docs/connected-mode.md`, §5); whether it was
    /// agreed shows at Connected ([`crate::Verbs::rc`]). The window must
    /// hold the layout with `big` ([`Layout::window_len_with`]) for the
    /// request to be made; otherwise, or without the offer, the channel is
    /// laid out as by `attach`.
    pub fn attach_with(
        window: Window,
        params: LayoutParams,
        big: Option<BigParams>,
        notify: N,
    ) -> Result<Self, AttachError> {
        let header =
            Header::new(&window).map_err(|e| AttachError::Ring(RingError::OutOfBounds(e)))?;
        if header.magic() != ring::header::MAGIC {
            return Err(AttachError::NotReady);
        }
        match header.backend_state() {
            State::InitWait => {}
            State::Initialised | State::Connected => {
                // A previous incarnation of this guest (before a reboot) is
                // still attached: say it has gone, so the back end resets
                // the window and announces InitWait again.
                if header.guest_state() != State::Closing {
                    header.set_guest_state(State::Closing);
                    notify.notify();
                }
                return Err(AttachError::NotReady);
            }
            _ => return Err(AttachError::NotReady),
        }
        if header.version() != ring::header::VERSION {
            return Err(AttachError::BadVersion(header.version()));
        }
        let offered = header.backend_features() & features::CONNECTED_MODE != 0;
        let big = big
            .filter(|_| offered)
            .filter(|b| Layout::compute_with(params, Some(*b), window.len()).is_ok());
        let layout =
            Layout::compute_with(params, big, window.len()).map_err(AttachError::Layout)?;
        // Big slots travel on the same TX and RX rings.
        let (big_tx, big_rx) =
            big.map_or((0, 0), |b| (u32::from(b.tx_slots), u32::from(b.rx_slots)));
        if (1u32 << params.tx_order) < u32::from(params.tx_slots) + big_tx {
            return Err(AttachError::RingSmallerThanSlots { ring: "tx" });
        }
        if (1u32 << params.rx_order) < u32::from(params.rx_slots) + big_rx {
            return Err(AttachError::RingSmallerThanSlots { ring: "rx" });
        }
        let sub = |r: &core::ops::Range<usize>| {
            window
                .sub(r.start, r.end - r.start)
                .map_err(|e| AttachError::Ring(RingError::OutOfBounds(e)))
        };
        let mut ctrl =
            FrontRing::attach(sub(&layout.ctrl)?, params.ctrl_order).map_err(AttachError::Ring)?;
        let mut tx =
            FrontRing::attach(sub(&layout.tx)?, params.tx_order).map_err(AttachError::Ring)?;
        let mut rx =
            FrontRing::attach(sub(&layout.rx)?, params.rx_order).map_err(AttachError::Ring)?;
        let buffers = sub(&layout.buffers)?;
        let rc = match (&layout.big, big) {
            (Some(ranges), Some(bp)) => {
                let cm =
                    FrontRing::attach(sub(&ranges.cm)?, bp.cm_order).map_err(AttachError::Ring)?;
                let shape = crate::rc::BigLayout {
                    tx_count: bp.tx_slots,
                    rx_count: bp.rx_slots,
                    slot_size: bp.slot_size,
                };
                Some(rc::FrontRc::new(cm, shape, sub(&ranges.area)?))
            }
            _ => None,
        };
        ctrl.init();
        tx.init();
        rx.init();
        let epoch = header.epoch();
        header.write_params(&params);
        if let Some(bp) = big {
            header.write_big_params(&bp);
            header.set_guest_features(features::CONNECTED_MODE);
        }
        header.set_guest_epoch(epoch);
        header.set_guest_state(State::Initialised);
        notify.notify();
        let slots = SlotLayout {
            tx_count: params.tx_slots,
            rx_count: params.rx_slots,
            slot_size: params.slot_size,
        };
        Ok(FrontHca {
            header,
            layout,
            slots,
            buffers,
            ctrl,
            tx,
            rx,
            notify,
            phase: Phase::Waiting,
            epoch,
            port: lifecycle::unknown_port(),
            offloads: crate::Offloads::NONE,
            slots_taken: false,
            tx_in_flight: vec![false; usize::from(params.tx_slots)],
            rx_in_flight: vec![false; usize::from(params.rx_slots)],
            ctrl_pending: VecDeque::new(),
            next_cookie: 1,
            unpublished: false,
            stats: FrontStats {
                doorbells: 1,
                ..FrontStats::default()
            },
            rc,
            stash: VecDeque::new(),
        })
    }

    pub fn stats(&self) -> FrontStats {
        self.stats
    }

    /// The window layout both sides agreed on.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The epoch of the back end this channel is attached to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}
