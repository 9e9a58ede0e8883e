//! Character generator (RFC 864): sends the chargen stream as fast as the
//! socket takes it, ignores what arrives, and stops when the peer closes.

use smoltcp::socket::tcp;

use super::pool::{close_after_peer, drain};
use super::ServiceStats;
use crate::pattern::Chargen;

#[derive(Default)]
pub(crate) struct ChargenConn {
    stream: Chargen,
}

pub(crate) fn serve(
    socket: &mut tcp::Socket<'_>,
    conn: &mut ChargenConn,
    stats: &mut ServiceStats,
) -> bool {
    let mut did = drain(socket) > 0;
    while socket.can_send() {
        let sent = socket.send(|buf| {
            conn.stream.fill(buf);
            (buf.len(), buf.len())
        });
        match sent {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                stats.chargen_bytes += n as u64;
                did = true;
            }
        }
    }
    did | close_after_peer(socket)
}
