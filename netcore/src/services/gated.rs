//! A smoltcp device that passes every received packet through a
//! [`SynGate`] first: a held-back SYN reaches smoltcp empty, which it drops
//! without an answer (as ipoib hands over a packet it could not copy).

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;

use super::gate::SynGate;

/// `device` with `gate` in front of its receive path.
pub struct Gated<'a, D> {
    pub device: &'a mut D,
    pub gate: &'a mut SynGate,
}

/// A received packet that meets the gate when smoltcp reads it.
pub struct GatedRx<'a, R> {
    inner: R,
    gate: &'a mut SynGate,
}

impl<R: phy::RxToken> phy::RxToken for GatedRx<'_, R> {
    fn consume<T, F>(self, f: F) -> T
    where
        F: FnOnce(&[u8]) -> T,
    {
        let gate = self.gate;
        self.inner.consume(|packet| {
            if gate.admit(packet) {
                f(packet)
            } else {
                f(&[])
            }
        })
    }
}

impl<D: Device> Device for Gated<'_, D> {
    type RxToken<'b>
        = GatedRx<'b, D::RxToken<'b>>
    where
        Self: 'b;
    type TxToken<'b>
        = D::TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let Gated { device, gate } = self;
        let (rx, tx) = device.receive(timestamp)?;
        Some((GatedRx { inner: rx, gate }, tx))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.device.transmit(timestamp)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

impl<D: ipoib::TxRoom> ipoib::TxRoom for Gated<'_, D> {
    fn tx_room(&self) -> usize {
        self.device.tx_room()
    }

    fn tx_room_max(&self) -> usize {
        self.device.tx_room_max()
    }
}
