//! A xenstore client over the shared ring (`io/xs_wire.h`): the page and
//! event channel the toolstack gives every domain (`HVM_PARAM_STORE_PFN`,
//! `HVM_PARAM_STORE_EVTCHN`).
//!
//! Requests are synchronous: write the message into the request ring,
//! notify, and wait (HLT) for the reply with the same `req_id`. Watch
//! events that arrive meanwhile are queued for [`XenStore::take_watch_event`].
//! The message codec is `xen_proto::xs`, shared with the back end.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use ring::Window;
use xen_proto::xs::{
    ring_index, ring_offset as off, ring_used, ErrorName, Message, MessageReader, MsgType, Payload,
    XsError, RING_SIZE,
};

use crate::arch::mmio;
use crate::timer::{now_micros, wait_for_interrupt};

use super::events;
use super::hypercall::{self, param, XenError};

/// How long a request may take.
const REQUEST_MICROS: u64 = 10_000_000;

/// Why a xenstore request failed.
#[derive(Clone, Debug)]
pub enum XenStoreError {
    Xen(XenError),
    /// The ring page could not be mapped.
    Map,
    Protocol(XsError),
    /// No reply within [`REQUEST_MICROS`].
    Timeout,
}

impl fmt::Display for XenStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenStoreError::Xen(e) => write!(f, "{e}"),
            XenStoreError::Map => f.write_str("cannot map the xenstore ring"),
            XenStoreError::Protocol(e) => write!(f, "{e}"),
            XenStoreError::Timeout => f.write_str("xenstored did not answer in time"),
        }
    }
}

impl From<XsError> for XenStoreError {
    fn from(e: XsError) -> Self {
        XenStoreError::Protocol(e)
    }
}

/// A watch event: the path that changed and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

pub struct XenStore {
    ring: Window,
    port: u32,
    next_req: u32,
    reader: MessageReader,
    events: VecDeque<WatchEvent>,
}

impl XenStore {
    /// Connects to the ring the toolstack set up.
    pub fn open() -> Result<XenStore, XenStoreError> {
        let pfn = hypercall::hvm_get_param(param::STORE_PFN).map_err(XenStoreError::Xen)?;
        let port =
            hypercall::hvm_get_param(param::STORE_EVTCHN).map_err(XenStoreError::Xen)? as u32;
        let ring = mmio::shared_window(pfn << 12, 4096).map_err(|_| XenStoreError::Map)?;
        let _ = events::unmask(port);
        Ok(XenStore {
            ring,
            port,
            next_req: 1,
            reader: MessageReader::new(),
            events: VecDeque::new(),
        })
    }

    fn load(&self, at: usize, order: Ordering) -> Result<u32, XenStoreError> {
        self.ring
            .load_u32(at, order)
            .map_err(|_| XenStoreError::Protocol(XsError::RingCorrupt))
    }

    fn store(&self, at: usize, v: u32, order: Ordering) -> Result<(), XenStoreError> {
        self.ring
            .store_u32(at, v, order)
            .map_err(|_| XenStoreError::Protocol(XsError::RingCorrupt))
    }

    /// Waits for the xenstore event channel (or a short timeout).
    fn wait(&self, deadline: u64) -> Result<(), XenStoreError> {
        if now_micros() >= deadline {
            return Err(XenStoreError::Timeout);
        }
        if !events::take(self.port) {
            wait_for_interrupt(Some(deadline.min(now_micros() + 10_000)));
        }
        Ok(())
    }

    fn send(&mut self, mut bytes: &[u8], deadline: u64) -> Result<(), XenStoreError> {
        while !bytes.is_empty() {
            let cons = self.load(off::REQ_CONS, Ordering::Acquire)?;
            let prod = self.load(off::REQ_PROD, Ordering::Relaxed)?;
            let used = ring_used(cons, prod).ok_or(XsError::RingCorrupt)?;
            let space = (RING_SIZE - used) as usize;
            if space == 0 {
                self.wait(deadline)?;
                continue;
            }
            let at = ring_index(prod);
            let n = bytes.len().min(space).min(RING_SIZE as usize - at);
            self.ring
                .write_bytes(off::REQ + at, &bytes[..n])
                .map_err(|_| XsError::RingCorrupt)?;
            self.store(
                off::REQ_PROD,
                prod.wrapping_add(n as u32),
                Ordering::Release,
            )?;
            events::notify(self.port);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Moves whatever the response ring holds into the reader. Returns the
    /// number of bytes taken.
    fn pull(&mut self) -> Result<usize, XenStoreError> {
        let cons = self.load(off::RSP_CONS, Ordering::Relaxed)?;
        let prod = self.load(off::RSP_PROD, Ordering::Acquire)?;
        let avail = ring_used(cons, prod).ok_or(XsError::RingCorrupt)? as usize;
        if avail == 0 {
            return Ok(0);
        }
        let mut buf = [0u8; RING_SIZE as usize];
        let at = ring_index(cons);
        let first = avail.min(RING_SIZE as usize - at);
        self.ring
            .read_bytes(off::RSP + at, &mut buf[..first])
            .map_err(|_| XsError::RingCorrupt)?;
        if avail > first {
            self.ring
                .read_bytes(off::RSP, &mut buf[first..avail])
                .map_err(|_| XsError::RingCorrupt)?;
        }
        self.store(
            off::RSP_CONS,
            cons.wrapping_add(avail as u32),
            Ordering::Release,
        )?;
        events::notify(self.port);
        self.reader.push(&buf[..avail]);
        Ok(avail)
    }

    fn queue_if_event(&mut self, m: &Message) -> bool {
        match m.watch_event() {
            Some((path, token)) => {
                self.events.push_back(WatchEvent {
                    path: String::from_utf8_lossy(path).into_owned(),
                    token: String::from_utf8_lossy(token).into_owned(),
                });
                true
            }
            None => false,
        }
    }

    /// Sends one request and returns its reply's payload.
    fn request(
        &mut self,
        ty: MsgType,
        tx: u32,
        payload: Payload,
    ) -> Result<Vec<u8>, XenStoreError> {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let deadline = now_micros() + REQUEST_MICROS;
        let msg = payload.message(ty, req_id, tx)?;
        self.send(&msg, deadline)?;
        loop {
            while let Some(m) = self.reader.next_message()? {
                if self.queue_if_event(&m) {
                    continue;
                }
                if m.header.req_id == req_id {
                    return Ok(m.reply_to(ty)?);
                }
                log::warn!("xenstore: dropped a reply to request {}", m.header.req_id);
            }
            if self.pull()? == 0 {
                self.wait(deadline)?;
            }
        }
    }

    /// A node's value, or `None` if it does not exist.
    pub fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, XenStoreError> {
        self.read_tx(0, path)
    }

    pub fn read_tx(&mut self, tx: u32, path: &str) -> Result<Option<Vec<u8>>, XenStoreError> {
        match self.request(MsgType::Read, tx, Payload::new().arg(path.as_bytes())) {
            Ok(v) => Ok(Some(v)),
            Err(XenStoreError::Protocol(XsError::Remote(ErrorName::Noent))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_tx(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<(), XenStoreError> {
        self.request(
            MsgType::Write,
            tx,
            Payload::new().arg(path.as_bytes()).raw(value),
        )
        .map(|_| ())
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XenStoreError> {
        self.write_tx(0, path, value)
    }

    /// Starts a transaction; returns its id.
    pub fn transaction_start(&mut self) -> Result<u32, XenStoreError> {
        let v = self.request(MsgType::TransactionStart, 0, Payload::new().arg(b""))?;
        xen_proto::xenbus::parse_u32(&v).ok_or(XenStoreError::Protocol(XsError::Malformed))
    }

    /// Ends a transaction; `Ok(false)` means it must be retried (EAGAIN).
    pub fn transaction_end(&mut self, tx: u32, commit: bool) -> Result<bool, XenStoreError> {
        let arg: &[u8] = if commit { b"T" } else { b"F" };
        match self.request(MsgType::TransactionEnd, tx, Payload::new().arg(arg)) {
            Ok(_) => Ok(true),
            Err(XenStoreError::Protocol(XsError::Remote(ErrorName::Again))) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Watches `path` (and everything below it). Xen fires once at once.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XenStoreError> {
        self.request(
            MsgType::Watch,
            0,
            Payload::new().arg(path.as_bytes()).arg(token.as_bytes()),
        )
        .map(|_| ())
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), XenStoreError> {
        self.request(
            MsgType::Unwatch,
            0,
            Payload::new().arg(path.as_bytes()).arg(token.as_bytes()),
        )
        .map(|_| ())
    }

    /// The next queued watch event, taking any that arrived since.
    pub fn take_watch_event(&mut self) -> Result<Option<WatchEvent>, XenStoreError> {
        if self.events.is_empty() {
            self.pull()?;
            while let Some(m) = self.reader.next_message()? {
                if !self.queue_if_event(&m) {
                    log::warn!("xenstore: unexpected {:?} outside a request", m.header.ty);
                }
            }
        }
        Ok(self.events.pop_front())
    }

    /// The ring's event channel.
    pub fn port(&self) -> u32 {
        self.port
    }
}
