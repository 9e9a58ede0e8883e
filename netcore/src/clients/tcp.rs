//! What the TCP clients share: connecting, the time limit, and telling a
//! finished connection from a refused or reset one.

use alloc::vec;

use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

use super::ClientError;

/// How a client connection stands after this poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Still connecting or exchanging data.
    Open,
    /// Our half is closed and acknowledged (FIN-WAIT-2): everything we
    /// sent arrived; the peer may still send.
    HalfClosed,
    /// Both halves are closed (TIME-WAIT, or CLOSED after LAST-ACK or
    /// FIN-WAIT-2): everything we sent arrived, and the peer waits for
    /// nothing more from us.
    Finished,
}

pub(crate) struct ClientConn {
    pub handle: SocketHandle,
    timeout: Duration,
    deadline: Option<Instant>,
    /// The state seen at the previous poll.
    last: State,
}

impl ClientConn {
    pub fn connect(
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        remote: IpEndpoint,
        local_port: u16,
        buffers: (usize, usize),
        timeout: Duration,
    ) -> Result<ClientConn, ClientError> {
        if local_port == 0 {
            return Err(ClientError::InvalidArgument("local port 0"));
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffers.0]),
            tcp::SocketBuffer::new(vec![0; buffers.1]),
        );
        socket.set_nagle_enabled(false);
        socket
            .connect(cx, remote, local_port)
            .map_err(ClientError::Connect)?;
        Ok(ClientConn {
            handle: sockets.add(socket),
            timeout,
            deadline: None,
            last: State::SynSent,
        })
    }

    /// Checks the connection after the caller has moved data. `Err` if it
    /// was refused, reset or out of time (the socket is then aborted).
    pub fn phase(
        &mut self,
        socket: &mut tcp::Socket<'_>,
        now: Instant,
    ) -> Result<Phase, ClientError> {
        let deadline = *self.deadline.get_or_insert(now + self.timeout);
        let state = socket.state();
        let last = core::mem::replace(&mut self.last, state);
        match state {
            State::TimeWait => return Ok(Phase::Finished),
            State::Closed => {
                return match last {
                    State::LastAck | State::TimeWait | State::FinWait2 => Ok(Phase::Finished),
                    State::SynSent | State::SynReceived => Err(ClientError::Refused),
                    _ => Err(ClientError::Reset),
                }
            }
            _ => {}
        }
        if now >= deadline {
            socket.abort();
            return Err(ClientError::TimedOut(self.timeout));
        }
        Ok(if state == State::FinWait2 {
            Phase::HalfClosed
        } else {
            Phase::Open
        })
    }
}
