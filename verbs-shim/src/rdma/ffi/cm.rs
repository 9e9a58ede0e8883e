//! librdmacm: an event channel and communication identifiers
//! (`rdma_cm_id`), for connected mode's connection setup.
//!
//! The RC QPs stay the provider's own (user-managed): `rdma_init_qp_attr`
//! gives their attributes for each state and the QP number travels in the
//! connection parameters, so librdmacm never touches them (and they live in
//! the port's own device context and protection domain).
//!
//! Every event is copied out and acknowledged at once
//! ([`CmChannel::next_event`]), so destroying an identifier never waits for
//! an unacknowledged event.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ffi::{c_int, c_void};
use core::ptr::{self, NonNull};
use std::os::fd::RawFd;

use rdma_sys::{
    ibv_qp_attr, rdma_accept, rdma_ack_cm_event, rdma_bind_addr, rdma_cm_event, rdma_cm_id,
    rdma_conn_param, rdma_connect, rdma_create_event_channel, rdma_create_id,
    rdma_destroy_event_channel, rdma_destroy_id, rdma_disconnect, rdma_establish,
    rdma_event_channel, rdma_get_cm_event, rdma_init_qp_attr, rdma_join_multicast,
    rdma_leave_multicast, rdma_listen, rdma_port_space, rdma_reject, rdma_resolve_addr,
    rdma_resolve_route,
};

use super::queues::set_nonblocking;
use super::{errno, zeroed, Zeroable};
use crate::rdma::cm_addr::RawSockaddr;
use crate::rdma::error::RdmaError;

// SAFETY: `rdma_conn_param` is integers and one raw pointer.
unsafe impl Zeroable for rdma_conn_param {}

/// An rdma_cm event channel (its descriptor non-blocking); destroyed on
/// drop, after every identifier on it (each holds an `Arc` of it).
pub(in crate::rdma) struct CmChannel(NonNull<rdma_event_channel>);

// SAFETY: librdmacm's calls on a channel are thread-safe (they are reads of
// its descriptor and the library's own locking).
unsafe impl Send for CmChannel {}
// SAFETY: as above.
unsafe impl Sync for CmChannel {}

impl Drop for CmChannel {
    fn drop(&mut self) {
        // SAFETY: the channel came from `rdma_create_event_channel` and is
        // destroyed once, after every id on it (they hold this `Arc`).
        unsafe { rdma_destroy_event_channel(self.0.as_ptr()) }
    }
}

/// Which rdma_cm port space an identifier lives in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::rdma) enum PortSpace {
    /// IP addresses (RoCE).
    Tcp,
    /// `AF_IB` (InfiniBand).
    Ib,
    /// Datagram ids: multicast joins.
    Udp,
}

/// The parameters of a connect or an accept.
pub(in crate::rdma) struct ConnParams<'a> {
    pub private: &'a [u8],
    pub qp_num: u32,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
}

/// The fields of an rdma_cm event this provider reads, copied out before
/// the event is acknowledged.
pub(in crate::rdma) struct CmEvent {
    pub kind: u32,
    pub status: i32,
    /// The identifier the event is for (its address, a lookup key).
    pub id: usize,
    /// A connection request: the new identifier, now ours, with the
    /// requester's address.
    pub request: Option<(CmId, RawSockaddr)>,
    /// The private data of a request, answer or rejection.
    pub private: Vec<u8>,
    /// A multicast join or error: the context given to the join, and what
    /// address handles to the group need (the MLID on InfiniBand).
    pub join: Option<(usize, GroupRoute)>,
}

/// The address handle attributes of a joined multicast group, from the
/// join's answer (on InfiniBand, the SA's MCMemberRecord), host order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(in crate::rdma) struct GroupRoute {
    /// The group's LID (the MLID; 0 on RoCE).
    pub mlid: u16,
    pub sl: u8,
    pub static_rate: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

/// The fields of a path record (`struct ibv_sa_path_rec`) that address
/// handles need, copied out in host order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::rdma) struct PathRecord {
    pub dgid: [u8; 16],
    pub sgid: [u8; 16],
    pub dlid: u16,
    pub sl: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    /// The IB rate encoding (`ibv_rate`).
    pub rate: u8,
}

impl CmChannel {
    pub(in crate::rdma) fn create() -> Result<Arc<CmChannel>, RdmaError> {
        // SAFETY: no arguments; NULL on failure with errno set.
        let ch = unsafe { rdma_create_event_channel() };
        let ch = CmChannel(NonNull::new(ch).ok_or_else(|| RdmaError::Verbs {
            call: "rdma_create_event_channel",
            errno: errno(),
        })?);
        set_nonblocking(ch.fd())?;
        Ok(Arc::new(ch))
    }

    /// The channel's descriptor: readable while events wait.
    pub(in crate::rdma) fn fd(&self) -> RawFd {
        // SAFETY: the channel is alive; `fd` is set at creation.
        unsafe { (*self.0.as_ptr()).fd }
    }

    /// The next event, copied out and acknowledged; `Ok(None)` when none
    /// waits.
    pub(in crate::rdma) fn next_event(self: &Arc<Self>) -> Result<Option<CmEvent>, i32> {
        let mut event: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is alive and non-blocking; `event` is a valid
        // out-parameter.
        let ret = unsafe { rdma_get_cm_event(self.0.as_ptr(), &mut event) };
        if ret != 0 {
            return match errno() {
                libc::EAGAIN | libc::EINTR | libc::ENODATA => Ok(None),
                e => Err(e),
            };
        }
        let Some(event) = NonNull::new(event) else {
            return Err(libc::EIO);
        };
        // SAFETY: librdmacm returned a valid event that stays valid until
        // it is acknowledged below; every field read is plain data, and the
        // private data pointer (when not NULL) covers `private_data_len`
        // bytes of the event's own buffer.
        let copied = unsafe {
            let e = event.as_ref();
            let kind = e.event;
            let conn = &e.param.conn;
            let join = is_ud_event(kind).then(|| {
                let ud = &e.param.ud;
                let ah = &ud.ah_attr;
                let route = GroupRoute {
                    mlid: ah.dlid,
                    sl: ah.sl,
                    static_rate: ah.static_rate,
                    hop_limit: ah.grh.hop_limit,
                    traffic_class: ah.grh.traffic_class,
                    flow_label: ah.grh.flow_label,
                };
                (ud.private_data as usize, route)
            });
            let private = if conn.private_data.is_null() || is_ud_event(kind) {
                Vec::new()
            } else {
                core::slice::from_raw_parts(
                    conn.private_data.cast::<u8>(),
                    usize::from(conn.private_data_len),
                )
                .to_vec()
            };
            let request = if kind == rdma_sys::rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST {
                NonNull::new(e.id).map(|id| {
                    let peer = ptr::read_unaligned(
                        ptr::addr_of!((*id.as_ptr()).route.addr.dst_addr_union)
                            .cast::<RawSockaddr>(),
                    );
                    (
                        CmId {
                            id,
                            _channel: Arc::clone(self),
                        },
                        peer,
                    )
                })
            } else {
                None
            };
            CmEvent {
                kind,
                status: e.status,
                id: e.id as usize,
                request,
                private,
                join,
            }
        };
        // SAFETY: the event came from `rdma_get_cm_event` and is
        // acknowledged once; nothing above kept a reference into it.
        let ret = unsafe { rdma_ack_cm_event(event.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: rdma_ack_cm_event failed: errno {}", errno());
        }
        Ok(Some(copied))
    }
}

fn is_ud_event(kind: u32) -> bool {
    use rdma_sys::rdma_cm_event_type::*;
    matches!(
        kind,
        RDMA_CM_EVENT_MULTICAST_JOIN | RDMA_CM_EVENT_MULTICAST_ERROR
    )
}

/// A communication identifier; destroyed on drop (which, for a connected
/// one, also sends the peer a disconnect request).
pub(in crate::rdma) struct CmId {
    id: NonNull<rdma_cm_id>,
    /// The channel the id reports to: destroyed after it.
    _channel: Arc<CmChannel>,
}

// SAFETY: librdmacm's calls on an id may be made from any thread; the
// provider uses each id from the thread that owns the port.
unsafe impl Send for CmId {}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the id came from `rdma_create_id` (or a connection
        // request) and is destroyed once. Every event for it has been
        // acknowledged (`next_event` acknowledges at once), so this does
        // not block.
        let ret = unsafe { rdma_destroy_id(self.id.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: rdma_destroy_id failed: errno {}", errno());
        }
    }
}

/// 0 on success, else the errno librdmacm set.
fn check(ret: c_int) -> Result<(), i32> {
    if ret == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

impl CmId {
    pub(in crate::rdma) fn create(channel: &Arc<CmChannel>, ps: PortSpace) -> Result<CmId, i32> {
        let ps = match ps {
            PortSpace::Tcp => rdma_port_space::RDMA_PS_TCP,
            PortSpace::Ib => rdma_port_space::RDMA_PS_IB,
            PortSpace::Udp => rdma_port_space::RDMA_PS_UDP,
        };
        let mut id: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is alive; `id` is a valid out-parameter; the
        // id has no user context.
        let ret = unsafe { rdma_create_id(channel.0.as_ptr(), &mut id, ptr::null_mut(), ps) };
        check(ret)?;
        let id = NonNull::new(id).ok_or(libc::EIO)?;
        Ok(CmId {
            id,
            _channel: Arc::clone(channel),
        })
    }

    /// The key events name this id by.
    pub(in crate::rdma) fn key(&self) -> usize {
        self.id.as_ptr() as usize
    }

    pub(in crate::rdma) fn bind(&self, addr: &RawSockaddr) -> Result<(), i32> {
        let mut addr = *addr;
        // SAFETY: the id is alive; `addr` holds a complete socket address
        // of the family it names and is valid for the call (librdmacm
        // copies it).
        check(unsafe { rdma_bind_addr(self.id.as_ptr(), addr.0.as_mut_ptr().cast()) })
    }

    pub(in crate::rdma) fn listen(&self, backlog: i32) -> Result<(), i32> {
        // SAFETY: the id is alive and bound.
        check(unsafe { rdma_listen(self.id.as_ptr(), backlog) })
    }

    pub(in crate::rdma) fn resolve_addr(
        &self,
        src: &RawSockaddr,
        dst: &RawSockaddr,
        timeout_ms: i32,
    ) -> Result<(), i32> {
        let (mut src, mut dst) = (*src, *dst);
        // SAFETY: the id is alive; both addresses are complete socket
        // addresses valid for the call (librdmacm copies them).
        check(unsafe {
            rdma_resolve_addr(
                self.id.as_ptr(),
                src.0.as_mut_ptr().cast(),
                dst.0.as_mut_ptr().cast(),
                timeout_ms,
            )
        })
    }

    pub(in crate::rdma) fn resolve_route(&self, timeout_ms: i32) -> Result<(), i32> {
        // SAFETY: the id is alive and its address resolved.
        check(unsafe { rdma_resolve_route(self.id.as_ptr(), timeout_ms) })
    }

    /// After `ROUTE_RESOLVED`: the route's first path record and the
    /// device port the id is on; `None` if the route holds no path.
    pub(in crate::rdma) fn route_path(&self) -> Option<(PathRecord, u8)> {
        let id = self.id.as_ptr();
        // SAFETY: the id is alive and used by this thread only. librdmacm
        // filled `route` (an array of `num_paths` records, or NULL) before
        // it reported ROUTE_RESOLVED, and keeps the array until the id is
        // destroyed or resolved again, neither of which can happen during
        // this call. Only plain data is read, through raw pointers; the
        // record is copied field by field (the GID unions hold 16 bytes
        // either way).
        unsafe {
            let route = ptr::addr_of!((*id).route);
            let n = (*route).num_paths;
            let rec = (*route).path_rec;
            if n < 1 || rec.is_null() {
                return None;
            }
            let r = &*rec;
            let path = PathRecord {
                dgid: r.dgid.raw,
                sgid: r.sgid.raw,
                dlid: u16::from_be(r.dlid),
                sl: r.sl,
                hop_limit: r.hop_limit,
                traffic_class: r.traffic_class,
                flow_label: u32::from_be(r.flow_label) & 0x000f_ffff,
                rate: r.rate,
            };
            Some((path, (*id).port_num))
        }
    }

    fn raw_params(p: &ConnParams<'_>) -> Result<rdma_conn_param, i32> {
        let mut raw: rdma_conn_param = zeroed();
        raw.private_data = p.private.as_ptr().cast::<c_void>();
        raw.private_data_len = u8::try_from(p.private.len()).map_err(|_| libc::EINVAL)?;
        raw.retry_count = p.retry_count;
        raw.rnr_retry_count = p.rnr_retry_count;
        raw.srq = 1;
        raw.qp_num = p.qp_num;
        Ok(raw)
    }

    pub(in crate::rdma) fn connect(&self, p: &ConnParams<'_>) -> Result<(), i32> {
        let mut raw = Self::raw_params(p)?;
        // SAFETY: the id is alive with its route resolved; `raw` and the
        // private data it points to are valid for the call (copied).
        check(unsafe { rdma_connect(self.id.as_ptr(), &mut raw) })
    }

    pub(in crate::rdma) fn accept(&self, p: &ConnParams<'_>) -> Result<(), i32> {
        let mut raw = Self::raw_params(p)?;
        // SAFETY: as for `connect`; the id came from a connection request.
        check(unsafe { rdma_accept(self.id.as_ptr(), &mut raw) })
    }

    pub(in crate::rdma) fn reject(&self) -> Result<(), i32> {
        // SAFETY: the id came from a connection request; no private data.
        check(unsafe { rdma_reject(self.id.as_ptr(), ptr::null(), 0) })
    }

    /// Joins the multicast group `addr` (an SA join on InfiniBand); the
    /// answer is a `MULTICAST_JOIN` or `MULTICAST_ERROR` event carrying
    /// `context`.
    pub(in crate::rdma) fn join_multicast(
        &self,
        addr: &RawSockaddr,
        context: usize,
    ) -> Result<(), i32> {
        let mut addr = *addr;
        // SAFETY: the id is alive and bound; `addr` is a complete socket
        // address valid for the call (copied); `context` is an opaque
        // number librdmacm only hands back, never dereferences.
        check(unsafe {
            rdma_join_multicast(
                self.id.as_ptr(),
                addr.0.as_mut_ptr().cast(),
                context as *mut c_void,
            )
        })
    }

    pub(in crate::rdma) fn leave_multicast(&self, addr: &RawSockaddr) -> Result<(), i32> {
        let mut addr = *addr;
        // SAFETY: the id is alive; `addr` is valid for the call.
        check(unsafe { rdma_leave_multicast(self.id.as_ptr(), addr.0.as_mut_ptr().cast()) })
    }

    /// Active side, after the answer: tells the peer we are ready.
    pub(in crate::rdma) fn establish(&self) -> Result<(), i32> {
        // SAFETY: the id is alive and got its connect response.
        check(unsafe { rdma_establish(self.id.as_ptr()) })
    }

    pub(in crate::rdma) fn disconnect(&self) -> Result<(), i32> {
        // SAFETY: the id is alive.
        check(unsafe { rdma_disconnect(self.id.as_ptr()) })
    }

    /// The attributes (and their mask) that move a QP of this connection
    /// to `state`.
    pub(in crate::rdma) fn qp_attr(&self, state: u32) -> Result<(ibv_qp_attr, c_int), i32> {
        let mut attr: ibv_qp_attr = zeroed();
        attr.qp_state = state;
        let mut mask: c_int = 0;
        // SAFETY: the id is alive; `attr` and `mask` are valid
        // out-parameters.
        check(unsafe { rdma_init_qp_attr(self.id.as_ptr(), &mut attr, &mut mask) })?;
        Ok((attr, mask))
    }
}
