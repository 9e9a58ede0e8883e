//! Connection state: waiting for Connected, reading the port block, noticing
//! a back end that went away or restarted, and handing back in-flight slots.

use ring::{PortBlock, State};

use super::{DrainReason, FrontHca, Phase};
use crate::hca::{Completion, HcaError, RecvInfo, WcStatus};
use crate::notify::Notify;
use crate::peer_fault::PeerFault;
use crate::slot::{RxSlot, TxSlot};
use crate::types::{Gid, IbMtu, Lid, PKey, PortAttr, PortState, QKey, Qpn};

/// Port attributes before the back end has published any.
pub(super) fn unknown_port() -> PortAttr {
    PortAttr {
        gid: Gid::ZERO,
        lid: Lid(0),
        qpn: Qpn::new_truncated(0),
        pkey: PKey(0),
        qkey: QKey(0),
        mtu: IbMtu::Mtu256,
        state: PortState::Down,
    }
}

/// Decodes the back end's port block; `None` if a field is out of range.
fn port_from_block(block: &PortBlock) -> Option<PortAttr> {
    Some(PortAttr {
        gid: Gid(block.gid),
        lid: Lid(block.lid),
        qpn: Qpn::new(block.qpn)?,
        pkey: PKey(block.pkey),
        qkey: QKey(block.qkey),
        mtu: IbMtu::from_code(block.mtu)?,
        state: PortState::from_code(block.state)?,
    })
}

impl<N: Notify> FrontHca<N> {
    /// Checks whether the back end has finished the handshake. Returns
    /// `Ok(true)` once the channel is connected and the port attributes are
    /// known.
    pub fn poll_connected(&mut self) -> Result<bool, HcaError> {
        match self.phase {
            Phase::Connected => return Ok(true),
            Phase::Draining(DrainReason::Violation(what)) => {
                return Err(HcaError::PeerViolation(what))
            }
            Phase::Draining(DrainReason::Disconnected) => return Err(HcaError::Disconnected),
            Phase::Waiting => {}
        }
        if self.header.epoch() != self.epoch {
            self.begin_drain(DrainReason::Disconnected);
            return Err(HcaError::Disconnected);
        }
        match self.header.backend_state() {
            State::Connected => {}
            State::InitWait | State::Initialising | State::Initialised => return Ok(false),
            _ => {
                self.begin_drain(DrainReason::Disconnected);
                return Err(HcaError::Disconnected);
            }
        }
        let Some(port) = self.header.read_port().as_ref().and_then(port_from_block) else {
            self.violation(PeerFault::BadPortBlock);
            return Err(HcaError::PeerViolation(PeerFault::BadPortBlock));
        };
        self.port = port;
        // Written before Connected, which was read with Acquire.
        let agreed = self.header.backend_features();
        self.offloads = crate::Offloads::from_features(agreed);
        self.phase = Phase::Connected;
        self.header.set_guest_state(ring::State::Connected);
        if agreed & ring::header::features::CONNECTED_MODE == 0 {
            // Asked for and not agreed: datagram mode only.
            self.rc = None;
        }
        if let Some(rc) = self.rc.as_mut() {
            rc.top_up_credits();
            if rc.publish() {
                self.stats.doorbells += 1;
                self.notify.notify();
            }
        }
        Ok(true)
    }

    /// Re-checks the back end's state and epoch: from `poll_cq` at the
    /// start of every batch of completions and every 32 within one, and
    /// from `arm_cq` before sleeping, so a restart or close is noticed
    /// promptly.
    pub(super) fn check_peer(&mut self) {
        if self.phase != Phase::Connected {
            return;
        }
        let same_epoch = self.header.epoch() == self.epoch;
        let connected = self.header.backend_state() == State::Connected;
        if !(same_epoch && connected) {
            log::warn!(
                "back end went away (epoch {} -> {})",
                self.epoch,
                self.header.epoch()
            );
            self.begin_drain(DrainReason::Disconnected);
        }
    }

    /// Records a protocol violation by the back end and closes the channel.
    pub(super) fn violation(&mut self, what: PeerFault) {
        log::warn!("back end violated the channel protocol: {what}");
        self.stats.violations += 1;
        self.stats.faults.record(&what);
        self.header.set_guest_state(State::Closing);
        self.notify.notify();
        self.begin_drain(DrainReason::Violation(what));
    }

    fn begin_drain(&mut self, reason: DrainReason) {
        if matches!(self.phase, Phase::Draining(_)) {
            return;
        }
        self.phase = Phase::Draining(reason);
        if let Some(rc) = self.rc.as_mut() {
            rc.drain();
        }
    }

    /// While draining: hands back one in-flight slot as a flushed completion,
    /// or the terminal error once none are left.
    pub(super) fn drain_one(
        &mut self,
        reason: DrainReason,
    ) -> Result<Option<Completion>, HcaError> {
        if let Some(i) = self.tx_in_flight.iter().position(|&f| f) {
            self.tx_in_flight[i] = false;
            return Ok(Some(Completion::Send {
                slot: TxSlot::mint(i as u16),
                status: WcStatus::Flushed,
            }));
        }
        if let Some(i) = self.rx_in_flight.iter().position(|&f| f) {
            self.rx_in_flight[i] = false;
            return Ok(Some(Completion::Recv {
                slot: RxSlot::mint(i as u16),
                status: WcStatus::Flushed,
                info: RecvInfo {
                    byte_len: 0,
                    src_qpn: Qpn::new_truncated(0),
                    src_lid: Lid(0),
                    pkey: PKey(0),
                    grh_present: false,
                    multicast: false,
                },
            }));
        }
        Err(match reason {
            DrainReason::Disconnected => HcaError::Disconnected,
            DrainReason::Violation(what) => HcaError::PeerViolation(what),
        })
    }

    /// Tells the back end this guest is leaving. In-flight slots come back as
    /// flushed completions from `poll_cq`.
    pub fn close(&mut self) {
        self.header.set_guest_state(State::Closing);
        self.notify.notify();
        self.begin_drain(DrainReason::Disconnected);
    }
}
