//! A copy of every packet the guest sends and receives, for captures. Only
//! paid for when a tap is set: the frame is copied out of the window into a
//! scratch buffer and handed to the tap. The per-guest TX filter
//! ([`super::filter`]) is held here too, beside the other per-packet hook.

use alloc::boxed::Box;
use alloc::vec::Vec;

use ring::Window;

use crate::types::{Gid, Qpn, GRH_LEN};

/// One packet seen by the back half.
#[derive(Debug)]
pub enum TapEvent<'a> {
    /// The guest sent `frame` (IPoIB header first) to `dest_qpn` at
    /// `dest_gid`.
    Sent {
        dest_qpn: Qpn,
        dest_gid: Gid,
        frame: &'a [u8],
    },
    /// The guest received `frame` (IPoIB header first) with this GRH.
    Received {
        grh: &'a [u8; GRH_LEN],
        frame: &'a [u8],
    },
}

/// The callback a back end installs.
pub type Tap = Box<dyn FnMut(TapEvent<'_>) + Send>;

#[derive(Default)]
pub(super) struct Tapper {
    pub tap: Option<Tap>,
    pub filter: Option<super::filter::BoxedTxFilter>,
    scratch: Vec<u8>,
}

impl Tapper {
    /// `head`, if given, is the checked copy that is sent in place of the
    /// slot's first bytes; the capture shows it too.
    #[inline]
    pub fn sent(
        &mut self,
        region: &Window,
        offset: usize,
        len: usize,
        head: Option<&[u8]>,
        dest_qpn: Qpn,
        dest_gid: Gid,
    ) {
        // Inlined down to this test: most back halves have no tap.
        if self.tap.is_some() {
            self.sent_tapped(region, offset, len, head, dest_qpn, dest_gid);
        }
    }

    #[cold]
    fn sent_tapped(
        &mut self,
        region: &Window,
        offset: usize,
        len: usize,
        head: Option<&[u8]>,
        dest_qpn: Qpn,
        dest_gid: Gid,
    ) {
        let Some(tap) = self.tap.as_mut() else {
            return;
        };
        self.scratch.resize(len, 0);
        if region.read_bytes(offset, &mut self.scratch).is_ok() {
            if let Some(head) = head {
                let n = head.len().min(len);
                self.scratch[..n].copy_from_slice(&head[..n]);
            }
            tap(TapEvent::Sent {
                dest_qpn,
                dest_gid,
                frame: &self.scratch,
            });
        }
    }

    #[inline]
    pub fn received(&mut self, region: &Window, offset: usize, len: usize) {
        if self.tap.is_some() {
            self.received_tapped(region, offset, len);
        }
    }

    #[cold]
    fn received_tapped(&mut self, region: &Window, offset: usize, len: usize) {
        let Some(tap) = self.tap.as_mut() else {
            return;
        };
        if len < GRH_LEN {
            return;
        }
        self.scratch.resize(len, 0);
        if region.read_bytes(offset, &mut self.scratch).is_err() {
            return;
        }
        let (grh, frame) = self.scratch.split_at(GRH_LEN);
        if let Ok(grh) = <&[u8; GRH_LEN]>::try_from(grh) {
            tap(TapEvent::Received { grh, frame });
        }
    }
}
