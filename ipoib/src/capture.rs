//! A hook that sees every packet the interface sends or receives, for
//! captures. [`NoCapture`] costs nothing; [`crate::pcap::PcapWriter`]
//! writes LINKTYPE_IPOIB files that Wireshark opens.

use smoltcp::time::Instant;

use crate::pcap::{PcapSink, PcapWriter};
use crate::wire::HwAddr;

pub trait Capture {
    /// `packet` starts with the 4-byte IPoIB header.
    fn transmitted(&mut self, at: Instant, dest: &HwAddr, packet: &[u8]);
    /// `grh` is the 40-byte area the HCA wrote; `packet` starts with the
    /// 4-byte IPoIB header.
    fn received(&mut self, at: Instant, grh: &[u8; 40], packet: &[u8]);
}

/// Captures nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCapture;

impl Capture for NoCapture {
    fn transmitted(&mut self, _: Instant, _: &HwAddr, _: &[u8]) {}
    fn received(&mut self, _: Instant, _: &[u8; 40], _: &[u8]) {}
}

impl<S: PcapSink> Capture for PcapWriter<S> {
    fn transmitted(&mut self, at: Instant, dest: &HwAddr, packet: &[u8]) {
        self.write_tx(at, dest, packet);
    }

    fn received(&mut self, at: Instant, grh: &[u8; 40], packet: &[u8]) {
        self.write_rx(at, grh, packet);
    }
}

impl<C: Capture + ?Sized> Capture for &mut C {
    fn transmitted(&mut self, at: Instant, dest: &HwAddr, packet: &[u8]) {
        (**self).transmitted(at, dest, packet);
    }

    fn received(&mut self, at: Instant, grh: &[u8; 40], packet: &[u8]) {
        (**self).received(at, grh, packet);
    }
}
