//! The guest side of the channel (`FrontHca`) against a hostile back end.
//!
//! The harness plays the back end (`common/scripted_backend.rs`): after an
//! honest handshake, the input is a script that mixes guest calls (post
//! sends and receives, resolve, join, poll, arm, flush, close) with back-end
//! actions: honest or forged responses on each ring (any slot, status,
//! length, source QPN, cookie), raw writes anywhere in the window (ring
//! indices, header state and epoch, the port block, slots).
//!
//! Checked on every input:
//! - nothing panics;
//! - a completion only ever returns a slot the guest had posted and not got
//!   back yet (a forged response can never hand a slot out twice);
//! - `FrontStats::violations` equals the sum of the per-kind fault counters;
//! - once `poll_cq` has returned an error, it keeps returning that error.
//!
//! Input: ops until the input runs out, `[op u8] [operands]`, op % 12:
//!   0 guest posts an RX slot   1 guest posts a TX slot (len u16)
//!   2 guest resolve / join (sel u8)   3 guest flush   4 guest poll_cq
//!   5 guest arm_cq   6 back end takes requests, answers control honestly
//!   7 back end completes a send (status u8)
//!   8 back end delivers (len u16, src_qpn u32, flags u8)
//!   9 forged response: ring u8, 24 bytes   10 raw window write: offset
//!     u32, len u8, bytes   11 header: sel u8, value u32 (state, epoch,
//!     port block)

#![no_main]

#[path = "common/scripted_backend.rs"]
mod scripted_backend;

use bytemuck::Zeroable;
use libfuzzer_sys::fuzz_target;
use ring::desc::{CtrlResponse, RxResponse, TxResponse};
use ring::State;
use scripted_backend::{Input, ScriptedBackend, GRH_LEN, PARAMS};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::{Completion, DestHandle, Gid, HcaError, QKey, Qpn, RxSlot, TxSlot, UdDest, Verbs};

/// What the guest holds and what it has posted.
struct Guest {
    front: FrontHca<NoNotify>,
    tx_free: Vec<TxSlot>,
    rx_free: Vec<RxSlot>,
    tx_posted: Vec<bool>,
    rx_posted: Vec<bool>,
    error: Option<HcaError>,
}

impl Guest {
    fn poll(&mut self) {
        let result = self.front.poll_cq();
        if let Some(e) = self.error {
            assert_eq!(result.as_ref().err(), Some(&e), "error not sticky");
            return;
        }
        match result {
            Ok(Some(Completion::Send { slot, .. })) => {
                let i = usize::from(slot.index());
                assert!(self.tx_posted[i], "tx slot {i} returned twice");
                self.tx_posted[i] = false;
                self.tx_free.push(slot);
            }
            Ok(Some(Completion::Recv { slot, .. })) => {
                let i = usize::from(slot.index());
                assert!(self.rx_posted[i], "rx slot {i} returned twice");
                self.rx_posted[i] = false;
                self.rx_free.push(slot);
            }
            Ok(_) => {}
            Err(e) => self.error = Some(e),
        }
        let stats = self.front.stats();
        assert_eq!(stats.violations, stats.faults.total());
    }

    fn post_recv(&mut self) {
        let Some(slot) = self.rx_free.pop() else {
            return;
        };
        let i = usize::from(slot.index());
        match self.front.post_recv(slot) {
            Ok(()) => self.rx_posted[i] = true,
            Err(e) => self.rx_free.push(e.slot),
        }
    }

    fn post_send(&mut self, len: usize) {
        let Some(slot) = self.tx_free.pop() else {
            return;
        };
        let i = usize::from(slot.index());
        let dest = UdDest {
            handle: DestHandle(1),
            qpn: Qpn::new_truncated(0x99),
            qkey: QKey::IPOIB_DEFAULT,
        };
        match self.front.post_send(slot, len, &dest) {
            Ok(()) => self.tx_posted[i] = true,
            Err(e) => self.tx_free.push(e.slot),
        }
    }
}

fn forged(back: &mut ScriptedBackend, input: &mut Input<'_>) {
    let ring = input.u8() % 3;
    let bytes = input.bytes(24);
    let mut raw = [0u8; 24];
    raw[..bytes.len()].copy_from_slice(bytes);
    match ring {
        0 => {
            let mut rsp = RxResponse::zeroed();
            let n = core::mem::size_of::<RxResponse>();
            bytemuck::bytes_of_mut(&mut rsp).copy_from_slice(&raw[..n]);
            let _ = back.rx.push_response(&rsp);
        }
        1 => {
            let mut rsp = TxResponse::zeroed();
            let n = core::mem::size_of::<TxResponse>();
            bytemuck::bytes_of_mut(&mut rsp).copy_from_slice(&raw[..n]);
            let _ = back.tx.push_response(&rsp);
        }
        _ => {
            let mut rsp = CtrlResponse::zeroed();
            let n = core::mem::size_of::<CtrlResponse>().min(24);
            bytemuck::bytes_of_mut(&mut rsp)[..n].copy_from_slice(&raw[..n]);
            let _ = back.ctrl.push_response(&rsp);
        }
    }
}

fn header(back: &mut ScriptedBackend, input: &mut Input<'_>) {
    let sel = input.u8();
    let value = input.u32();
    match sel % 4 {
        0 => back.header.set_backend_state(State::from_u32(value % 8)),
        1 => back.header.set_epoch(value),
        2 => {
            let mut port = ScriptedBackend::port_block();
            port.qpn = value;
            port.mtu = (value >> 24) as u8;
            port.state = (value >> 16) as u8;
            back.header.write_port(&port);
        }
        _ => {
            let _ = back
                .window
                .write_bytes(usize::from(sel) * 4 % 4096, &value.to_le_bytes());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mut back, mut front)) = ScriptedBackend::connect() else {
        panic!("the honest handshake failed");
    };
    let Some((tx, rx)) = front.take_slots() else {
        panic!("no slots");
    };
    let mut guest = Guest {
        front,
        tx_free: tx.collect(),
        rx_free: rx.collect(),
        tx_posted: vec![false; usize::from(PARAMS.tx_slots)],
        rx_posted: vec![false; usize::from(PARAMS.rx_slots)],
        error: None,
    };
    let mut input = Input::new(data);
    while !input.is_empty() {
        match input.u8() % 12 {
            0 => guest.post_recv(),
            1 => guest.post_send(usize::from(input.u16()) % 4200),
            2 => {
                let sel = input.u8();
                let mut gid = [0u8; 16];
                gid[0] = if sel & 1 == 0 { 0xfe } else { 0xff };
                gid[15] = sel;
                let gid = Gid(gid);
                let _ = match sel % 3 {
                    0 => guest.front.resolve(gid),
                    1 => guest.front.attach_mcast(gid),
                    _ => guest.front.detach_mcast(gid),
                };
            }
            3 => {
                let _ = guest.front.flush();
            }
            4 => guest.poll(),
            5 => {
                let _ = guest.front.arm_cq();
            }
            6 => {
                back.take_requests();
                back.answer_ctrl();
                back.publish();
            }
            7 => {
                back.complete_tx(u16::from(input.u8() % 8));
                back.publish();
            }
            8 => {
                let len = usize::from(input.u16()) % 4200;
                let qpn = input.u32();
                let flags = u16::from(input.u8() & 3);
                let payload = vec![0x45u8; len.saturating_sub(GRH_LEN)];
                back.deliver(&[0; GRH_LEN], &payload, qpn, flags, None);
                back.publish();
            }
            9 => {
                forged(&mut back, &mut input);
                back.publish();
            }
            10 => {
                let offset = input.u32() as usize % (back.window.len() + 64);
                let len = usize::from(input.u8());
                let bytes = input.bytes(len);
                let _ = back.window.write_bytes(offset, bytes);
            }
            _ => header(&mut back, &mut input),
        }
    }
    // Drain whatever is left: every slot comes back at most once.
    for _ in 0..64 {
        guest.poll();
    }
});
