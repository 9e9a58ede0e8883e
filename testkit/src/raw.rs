//! A port on the sim fabric driven by hand: it sends whatever frame a test
//! builds (IPoIB header first) to guest 1 of a [`Net`], through a real
//! channel, so tests can put lies and garbage on the wire.

use verbs_shim::{Completion, Hca, QKey, TxSlot, UdDest, Verbs};

use crate::guest::{connect_channel, BoxError, GuestSpec, SimBack, SimFront};
use crate::net::Net;

pub struct RawSender {
    back: SimBack,
    front: SimFront,
    /// TX slots this side holds.
    free: Vec<TxSlot>,
    dest: UdDest,
}

impl RawSender {
    /// Opens fabric port `port` and resolves a path to guest 0 of `net`.
    pub fn new(net: &mut Net, port: u8) -> Result<RawSender, BoxError> {
        let (_window, mut back, mut front) = connect_channel(&net.fabric, &GuestSpec::new(port))?;
        let (tx, _) = front.take_slots().ok_or("slots")?;
        let victim = net.guests[0].device.hw_addr();
        front.resolve(victim.gid)?;
        front.flush()?;
        let mut handle = None;
        for _ in 0..10 {
            back.service()?;
            net.round()?;
            while let Some(c) = front.poll_cq()? {
                if let Completion::Path { result, .. } = c {
                    handle = Some(result.map_err(|e| format!("{e:?}"))?);
                }
            }
        }
        let dest = UdDest {
            handle: handle.ok_or("no path to guest 1")?,
            qpn: victim.qpn,
            qkey: QKey::IPOIB_DEFAULT,
        };
        Ok(RawSender {
            back,
            front,
            free: tx.collect(),
            dest,
        })
    }

    /// This port's own hardware address.
    pub fn own_hw(&self) -> ipoib::wire::HwAddr {
        let port = self.front.port_attr();
        ipoib::wire::HwAddr::new(port.qpn, port.gid)
    }

    /// Sends `frame` to guest 1, lets the net run a few rounds, and takes
    /// the send's completion back.
    pub fn send(&mut self, net: &mut Net, frame: &[u8]) -> Result<(), BoxError> {
        let slot = self.free.pop().ok_or("out of tx slots")?;
        {
            let mut buffers = self.front.buffers();
            let buffer = buffers.tx.slot_mut(&slot);
            let len = frame.len().min(buffer.len());
            buffer[..len].copy_from_slice(&frame[..len]);
        }
        self.front
            .post_send(slot, frame.len(), &self.dest)
            .map_err(|e| e.error)?;
        self.front.flush()?;
        for _ in 0..5 {
            self.back.service()?;
            net.round()?;
        }
        while let Some(c) = self.front.poll_cq()? {
            if let Completion::Send { slot, .. } = c {
                self.free.push(slot);
            }
        }
        Ok(())
    }
}
