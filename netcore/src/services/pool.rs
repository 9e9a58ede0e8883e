//! A TCP service's listening sockets: several per port so several clients
//! can be served at once, each re-listening once its connection is over.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use super::{KEEP_ALIVE, SERVER_TIMEOUT};

/// What one [`Pool::poll`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Activity {
    pub progress: bool,
    /// Connections that appeared since the last poll.
    pub accepted: u64,
}

struct Slot<C> {
    handle: SocketHandle,
    /// The connection being served, from the first poll that sees the
    /// socket active until it is closed.
    conn: Option<C>,
}

pub(crate) struct Pool<C> {
    port: u16,
    slots: Vec<Slot<C>>,
}

impl<C: Default> Pool<C> {
    /// Adds `count` sockets listening on `port` to `sockets`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        count: usize,
        port: u16,
        rx_buffer: usize,
        tx_buffer: usize,
    ) -> Pool<C> {
        let slots = (0..count)
            .map(|_| {
                let mut socket = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; rx_buffer]),
                    tcp::SocketBuffer::new(vec![0; tx_buffer]),
                );
                socket.set_nagle_enabled(false);
                // A peer that vanishes is given up on, so its slot is freed.
                socket.set_timeout(Some(SERVER_TIMEOUT));
                socket.set_keep_alive(Some(KEEP_ALIVE));
                if let Err(e) = socket.listen(port) {
                    log::error!("netcore: cannot listen on port {port}: {e}");
                }
                Slot {
                    handle: sockets.add(socket),
                    conn: None,
                }
            })
            .collect();
        Pool { port, slots }
    }

    /// Calls `serve` for every socket with a connection, and puts every
    /// socket whose connection is over (closed, reset, timed out, or in
    /// TIME-WAIT) back to listening. `serve` returns true if it did
    /// anything.
    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        mut serve: impl FnMut(&mut tcp::Socket<'_>, &mut C) -> bool,
    ) -> Activity {
        let mut activity = Activity::default();
        for slot in &mut self.slots {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            if socket.is_active() {
                let conn = slot.conn.get_or_insert_with(|| {
                    activity.accepted += 1;
                    activity.progress = true;
                    C::default()
                });
                activity.progress |= serve(socket, conn);
            }
            if !socket.is_open() {
                slot.conn = None;
                match socket.listen(self.port) {
                    Ok(()) => activity.progress = true,
                    Err(e) => log::error!("netcore: cannot listen on port {}: {e}", self.port),
                }
            }
        }
        activity
    }

    /// The sockets, for removing them.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.slots.iter().map(|s| s.handle)
    }
}

/// Reads and drops whatever is waiting. Returns the bytes dropped.
pub(crate) fn drain(socket: &mut tcp::Socket<'_>) -> usize {
    let mut total = 0;
    while socket.can_recv() {
        match socket.recv(|data| (data.len(), data.len())) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    total
}

/// The peer has closed its half and everything it sent has been read (and
/// we have not closed ours). Unlike `!may_recv()`, false while the
/// connection is still being set up.
pub(crate) fn peer_closed(socket: &tcp::Socket<'_>) -> bool {
    socket.state() == tcp::State::CloseWait && !socket.can_recv()
}

/// Closes our half once [`peer_closed`]. Returns true if it closed.
pub(crate) fn close_after_peer(socket: &mut tcp::Socket<'_>) -> bool {
    if peer_closed(socket) {
        socket.close();
        return true;
    }
    false
}
