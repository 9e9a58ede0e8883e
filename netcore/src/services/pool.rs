//! A TCP service's listening sockets: several per port so several clients
//! can be served at once, each re-listening once its connection is over.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use super::gate::Peer;
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
    rx_buffer: usize,
    tx_buffer: usize,
    /// The receive buffer of the sockets a burst adds (see
    /// [`Pool::with_burst_rx`]).
    burst_rx: usize,
    /// The sockets made by [`Pool::new`]; the pool never shrinks below.
    base: usize,
}

/// A listening socket for `port` with the services' settings.
fn listener(port: u16, rx_buffer: usize, tx_buffer: usize) -> tcp::Socket<'static> {
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
    socket
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
            .map(|_| Slot {
                handle: sockets.add(listener(port, rx_buffer, tx_buffer)),
                conn: None,
            })
            .collect();
        Pool {
            port,
            slots,
            rx_buffer,
            tx_buffer,
            burst_rx: rx_buffer,
            base: count,
        }
    }

    /// Sockets added for a burst get `rx` bytes of receive buffer (at most
    /// the base sockets'), so the budget pays for more of them: discard's
    /// base sockets offer a bulk transfer's large window, a burst of
    /// clients each needs far less.
    pub fn with_burst_rx(mut self, rx: usize) -> Pool<C> {
        self.burst_rx = rx.min(self.rx_buffer);
        self
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

    /// Sockets in the pool.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The sockets, for removing them.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.slots.iter().map(|s| s.handle)
    }
}

/// What [`super::ServiceHost`] needs of a pool to resize it and set its
/// gate, whatever its connections' type.
pub(crate) trait Resizable {
    fn port(&self) -> u16;
    /// Sockets waiting for a connection.
    fn listening(&self, sockets: &SocketSet<'_>) -> usize;
    /// Adds the clients with a socket here (connected, or half-open).
    fn add_peers(&self, sockets: &SocketSet<'_>, out: &mut Vec<Peer>);
    /// Adds up to `want` listening sockets, each paid for out of `budget`
    /// (bytes of socket buffers); stops when the budget cannot pay for one.
    /// Returns how many it added.
    fn grow(&mut self, sockets: &mut SocketSet<'static>, want: usize, budget: &mut usize) -> usize;
    /// Removes listening sockets added by `grow` while more than `keep`
    /// sockets listen, paying their bytes back into `budget`. Returns how
    /// many it removed.
    fn shrink(
        &mut self,
        sockets: &mut SocketSet<'static>,
        keep: usize,
        budget: &mut usize,
    ) -> usize;
}

impl<C> Resizable for Pool<C> {
    fn port(&self) -> u16 {
        self.port
    }

    fn listening(&self, sockets: &SocketSet<'_>) -> usize {
        self.slots
            .iter()
            .filter(|s| sockets.get::<tcp::Socket>(s.handle).state() == tcp::State::Listen)
            .count()
    }

    fn add_peers(&self, sockets: &SocketSet<'_>, out: &mut Vec<Peer>) {
        for s in &self.slots {
            let socket = sockets.get::<tcp::Socket>(s.handle);
            if matches!(socket.state(), tcp::State::Listen | tcp::State::Closed) {
                continue;
            }
            if let Some(ep) = socket.remote_endpoint() {
                out.push(Peer {
                    addr: ep.addr,
                    port: ep.port,
                    local_port: self.port,
                });
            }
        }
    }

    fn grow(&mut self, sockets: &mut SocketSet<'static>, want: usize, budget: &mut usize) -> usize {
        let cost = self.burst_rx + self.tx_buffer;
        let mut added = 0;
        while added < want && *budget >= cost {
            *budget -= cost;
            self.slots.push(Slot {
                handle: sockets.add(listener(self.port, self.burst_rx, self.tx_buffer)),
                conn: None,
            });
            added += 1;
        }
        added
    }

    fn shrink(
        &mut self,
        sockets: &mut SocketSet<'static>,
        keep: usize,
        budget: &mut usize,
    ) -> usize {
        let mut listening = self.listening(sockets);
        let mut removed = 0;
        let mut i = self.slots.len();
        while i > self.base && listening > keep {
            i -= 1;
            let handle = self.slots[i].handle;
            if sockets.get::<tcp::Socket>(handle).state() != tcp::State::Listen {
                continue;
            }
            sockets.remove(handle);
            self.slots.swap_remove(i);
            // Only sockets past `base` go, and those are burst sockets.
            *budget += self.burst_rx + self.tx_buffer;
            listening -= 1;
            removed += 1;
        }
        removed
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
