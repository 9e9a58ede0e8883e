//! One port's queues: memory region, completion channel, CQ and UD QP.

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ffi::{c_int, c_uint, c_void};
use core::ptr::{self, NonNull};
use std::io;
use std::os::fd::RawFd;

use rdma_sys::{
    ibv_access_flags, ibv_ack_cq_events, ibv_attach_mcast, ibv_comp_channel, ibv_cq,
    ibv_create_comp_channel, ibv_create_cq, ibv_create_qp, ibv_dereg_mr, ibv_destroy_comp_channel,
    ibv_destroy_cq, ibv_destroy_qp, ibv_detach_mcast, ibv_get_cq_event, ibv_gid, ibv_modify_qp,
    ibv_mr, ibv_qp, ibv_qp_attr, ibv_qp_attr_mask, ibv_qp_cap, ibv_qp_init_attr, ibv_qp_state,
    ibv_qp_type, ibv_recv_wr, ibv_reg_mr, ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wc,
    ibv_wr_opcode, ud_t,
};
use ring::Window;

use super::ah::Ah;
use super::device::Device;
use super::rc::RcCore;
use super::{errno, ret_errno, zeroed};
use crate::rdma::error::RdmaError;
use crate::rdma::gather::{arena_len, cell_offset, Registered, Sge};
use crate::rdma::wr::Wc;

/// Work completions taken from the CQ per `ibv_poll_cq` call.
pub(in crate::rdma) const POLL_BATCH: usize = 32;

/// Sizes and attributes of one port's queues.
#[derive(Clone, Copy, Debug)]
pub(in crate::rdma) struct QueueSpec {
    pub cqe: u32,
    pub send_wr: u32,
    pub recv_wr: u32,
    pub port: u8,
    pub pkey_index: u16,
    pub qkey: u32,
    /// Scatter/gather entries per send work request (2 for sends with a
    /// head from the arena; 1 if the device cannot).
    pub send_sge: u32,
}

/// A registered memory region; deregistered on drop.
pub(super) struct Mr(NonNull<ibv_mr>);

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: the MR came from `ibv_reg_mr` and is deregistered once,
        // after the QP that used it (field order of `Queues`).
        let ret = unsafe { ibv_dereg_mr(self.0.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_dereg_mr failed: errno {}", ret_errno(ret));
        }
    }
}

/// A completion channel; destroyed on drop.
pub(super) struct Channel(NonNull<ibv_comp_channel>);

// SAFETY: a completion channel may be used from any thread (its calls are
// reads of its descriptor); the provider reads it from the thread that owns
// the port.
unsafe impl Send for Channel {}
// SAFETY: as above.
unsafe impl Sync for Channel {}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: the channel came from `ibv_create_comp_channel` and is
        // destroyed once, after the CQ that used it.
        let ret = unsafe { ibv_destroy_comp_channel(self.0.as_ptr()) };
        if ret != 0 {
            log::error!(
                "rdma: ibv_destroy_comp_channel failed: errno {}",
                ret_errno(ret)
            );
        }
    }
}

/// A CQ; destroyed on drop.
pub(super) struct Cq(pub(super) NonNull<ibv_cq>);

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: the CQ came from `ibv_create_cq` and is destroyed once,
        // after its QP. Every event taken from the channel was acknowledged
        // at once (`Queues::ack_events`), so this does not block.
        let ret = unsafe { ibv_destroy_cq(self.0.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_destroy_cq failed: errno {}", ret_errno(ret));
        }
    }
}

impl Cq {
    /// Takes up to [`POLL_BATCH`] completions, each turned by `map` into
    /// `out`; returns how many.
    pub(super) fn poll_into<T>(
        &self,
        out: &mut Vec<T>,
        map: impl Fn(&ibv_wc) -> T,
    ) -> Result<usize, i32> {
        let mut wcs: [ibv_wc; POLL_BATCH] = core::array::from_fn(|_| zeroed());
        let cq = self.0.as_ptr();
        // SAFETY: the CQ is alive; reading its context's ops is what the C
        // inline `ibv_poll_cq` does.
        let f = unsafe { (*(*cq).context).ops.poll_cq };
        let Some(poll) = f else {
            return Err(libc::ENOSYS);
        };
        // SAFETY: `wcs` has room for POLL_BATCH entries.
        let n = unsafe { poll(cq, POLL_BATCH as c_int, wcs.as_mut_ptr()) };
        let Ok(n) = usize::try_from(n) else {
            // A negative return is minus an errno (or just -1).
            return Err(n.checked_neg().filter(|e| *e > 1).unwrap_or(libc::EIO));
        };
        out.extend(wcs.iter().take(n.min(POLL_BATCH)).map(map));
        Ok(n)
    }

    /// Asks for a channel event at the next completion.
    pub(super) fn req_notify(&self) -> Result<(), i32> {
        let cq = self.0.as_ptr();
        // SAFETY: the CQ is alive; as in the C inline `ibv_req_notify_cq`.
        let f = unsafe { (*(*cq).context).ops.req_notify_cq };
        let Some(notify) = f else {
            return Err(libc::ENOSYS);
        };
        // SAFETY: `notify` is the provider's req_notify_cq for this CQ.
        let ret = unsafe { notify(cq, 0) };
        if ret == 0 {
            Ok(())
        } else {
            Err(ret_errno(ret))
        }
    }
}

/// A QP; destroyed on drop.
pub(super) struct Qp(pub(super) NonNull<ibv_qp>);

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: the QP came from `ibv_create_qp` and is destroyed once,
        // before its CQ and MR.
        let ret = unsafe { ibv_destroy_qp(self.0.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_destroy_qp failed: errno {}", ret_errno(ret));
        }
    }
}

/// One port's verbs objects. `Drop` first detaches the QP from its
/// multicast groups (the kernel refuses to destroy an attached QP, and then
/// everything under it, with `EBUSY`); then the fields drop in declaration
/// order: QP, CQ, channel, MRs, then the registered memory, then the device.
pub(in crate::rdma) struct Queues {
    qp: Qp,
    cq: Cq,
    /// Shared with the RC CQ, which reports to the same channel.
    channel: Arc<Channel>,
    /// Held for its `Drop` (the lkey is cached below).
    _mr: Mr,
    /// The header arena's registration (see the `gather` module).
    arena_mr: Mr,
    /// The registered memory; outlives its registration.
    region: Window,
    /// The header arena: one cell per TX slot, back-end memory the guest
    /// cannot reach; outlives its registration.
    arena: Window,
    /// Scatter/gather entries the QP takes per send, as the device granted.
    send_sge: u32,
    /// Held so the PD and context outlive everything above.
    _dev: Arc<Device>,
    qpn: u32,
    lkey: u32,
    fd: RawFd,
    /// Multicast groups the QP is attached to.
    groups: BTreeSet<[u8; 16]>,
    /// Connected mode's objects, whose CQ reports to this channel too.
    rc: Option<Arc<RcCore>>,
}

// SAFETY: the verbs objects may be used from any thread (libibverbs locks
// what it must), and `Queues` is only used through `&mut RdmaPort` or
// `&RdmaPort` methods that make thread-safe calls.
unsafe impl Send for Queues {}

impl Queues {
    /// Registers `region`, creates the channel, CQ and UD QP, and moves the
    /// QP to RTS.
    pub(in crate::rdma) fn create(
        dev: Arc<Device>,
        region: Window,
        spec: &QueueSpec,
    ) -> Result<Queues, RdmaError> {
        let mr = register(&dev, &region)?;
        let arena = Window::new_heap(arena_len(spec.send_wr as usize));
        let arena_mr = register(&dev, &arena)?;
        let channel = Arc::new(create_channel(&dev)?);
        set_nonblocking(channel.fd())?;
        let cq = create_cq(&dev, &channel, spec.cqe)?;
        let (qp, send_sge) = create_qp(&dev, &cq, spec)?;
        qp.modify_init(spec)?;
        qp.modify_state(ibv_qp_state::IBV_QPS_RTR, "ibv_modify_qp(RTR)")?;
        qp.modify_rts()?;
        let (qpn, lkey, fd) = (qp.qpn(), mr.lkey(), channel.fd());
        Ok(Queues {
            qp,
            cq,
            channel,
            _mr: mr,
            arena_mr,
            region,
            arena,
            send_sge,
            _dev: dev,
            qpn,
            lkey,
            fd,
            groups: BTreeSet::new(),
            rc: None,
        })
    }

    /// Creates connected mode's SRQ and CQ (on this port's completion
    /// channel) over the registered big-slot `region`.
    pub(in crate::rdma) fn create_rc(
        &mut self,
        region: Window,
        cqe: u32,
        srq_wr: u32,
    ) -> Result<Arc<RcCore>, RdmaError> {
        let core = RcCore::create(
            Arc::clone(&self._dev),
            Arc::clone(&self.channel),
            region,
            cqe,
            srq_wr,
        )?;
        self.rc = Some(Arc::clone(&core));
        Ok(core)
    }

    pub(in crate::rdma) fn qpn(&self) -> u32 {
        self.qpn
    }

    /// The memory region's local key.
    pub(in crate::rdma) fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The completion channel's file descriptor (non-blocking).
    pub(in crate::rdma) fn event_fd(&self) -> RawFd {
        self.fd
    }

    /// The scatter entry for `len` bytes at `offset` of the region, or
    /// `EINVAL` if that is outside it.
    fn sge(&self, offset: usize, len: u32) -> Result<ibv_sge, i32> {
        self.region_reg()
            .sge(offset, len as usize)
            .map(raw_sge)
            .ok_or(libc::EINVAL)
    }

    /// The registered region: address, length and local key.
    pub(in crate::rdma) fn region_reg(&self) -> Registered {
        Registered {
            base: self.region.as_ptr() as u64,
            len: self.region.len(),
            lkey: self.lkey,
        }
    }

    /// The registered header arena.
    pub(in crate::rdma) fn arena_reg(&self) -> Registered {
        Registered {
            base: self.arena.as_ptr() as u64,
            len: self.arena.len(),
            lkey: self.arena_mr.lkey(),
        }
    }

    /// Whether the QP takes sends of two scatter/gather entries.
    pub(in crate::rdma) fn can_gather(&self) -> bool {
        self.send_sge >= 2
    }

    /// Copies `head` into TX slot `index`'s arena cell. The caller holds
    /// the slot's token, so no posted send reads the cell now.
    pub(in crate::rdma) fn write_head(&self, index: u16, head: &[u8]) -> Result<(), i32> {
        let tx_count = self.arena.len() / crate::rdma::gather::HEAD_CELL;
        let at = cell_offset(index, tx_count).ok_or(libc::EINVAL)?;
        if head.len() > crate::rdma::gather::HEAD_CELL {
            return Err(libc::EINVAL);
        }
        self.arena.write_bytes(at, head).map_err(|_| libc::EINVAL)
    }

    /// Posts one signaled UD send of `len` bytes at `offset`.
    pub(in crate::rdma) fn post_send(
        &self,
        wr_id: u64,
        offset: usize,
        len: u32,
        ah: &Ah,
        remote_qpn: u32,
        remote_qkey: u32,
    ) -> Result<(), i32> {
        let mut sges = [self.sge(offset, len)?];
        self.post_send_raw(wr_id, &mut sges, ah, remote_qpn, remote_qkey)
    }

    /// Posts one signaled UD send gathered from `sges` (entries of the
    /// region and of the arena, checked by the caller against
    /// [`Queues::region_reg`] and [`Queues::arena_reg`]).
    pub(in crate::rdma) fn post_send_gather(
        &self,
        wr_id: u64,
        sges: &[Sge],
        ah: &Ah,
        remote_qpn: u32,
        remote_qkey: u32,
    ) -> Result<(), i32> {
        let (region, arena) = (self.region_reg(), self.arena_reg());
        let inside = |s: &Sge, r: &Registered| {
            s.lkey == r.lkey
                && s.addr >= r.base
                && (s.addr - r.base)
                    .checked_add(u64::from(s.length))
                    .is_some_and(|end| end <= r.len as u64)
        };
        if sges.len() > self.send_sge as usize
            || !sges.iter().all(|s| inside(s, &region) || inside(s, &arena))
        {
            return Err(libc::EINVAL);
        }
        let mut raw = [raw_sge(Sge {
            addr: 0,
            length: 0,
            lkey: 0,
        }); 2];
        let Some(raw) = raw.get_mut(..sges.len()) else {
            return Err(libc::EINVAL);
        };
        for (r, s) in raw.iter_mut().zip(sges) {
            *r = raw_sge(*s);
        }
        self.post_send_raw(wr_id, raw, ah, remote_qpn, remote_qkey)
    }

    /// Posts one signaled UD send over `sges`, which name registered memory.
    fn post_send_raw(
        &self,
        wr_id: u64,
        sges: &mut [ibv_sge],
        ah: &Ah,
        remote_qpn: u32,
        remote_qkey: u32,
    ) -> Result<(), i32> {
        let num_sge = c_int::try_from(sges.len()).map_err(|_| libc::EINVAL)?;
        let mut wr: ibv_send_wr = zeroed();
        wr.wr_id = wr_id;
        wr.sg_list = sges.as_mut_ptr();
        wr.num_sge = num_sge;
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.wr.ud = ud_t {
            ah: ah.as_ptr(),
            remote_qpn,
            remote_qkey,
        };
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        let qp = self.qp.0.as_ptr();
        // SAFETY: the QP is alive; `wr` and `sges` are valid for the call
        // (the provider copies them into its queue before returning); each
        // SGE names memory inside the registered region or the registered
        // header arena (the callers build them from `sge`/`region_reg` and
        // `arena_reg`, and `post_send_gather` checks them), which stay
        // registered while the WR is outstanding (the MRs outlive the QP).
        let f = unsafe { (*(*qp).context).ops.post_send };
        let Some(post) = f else {
            return Err(libc::ENOSYS);
        };
        // SAFETY: as above; `post` is the provider's post_send for this QP.
        let ret = unsafe { post(qp, &mut wr, &mut bad) };
        if ret == 0 {
            Ok(())
        } else {
            Err(ret_errno(ret))
        }
    }

    /// Posts one receive over `len` bytes at `offset`.
    pub(in crate::rdma) fn post_recv(
        &self,
        wr_id: u64,
        offset: usize,
        len: u32,
    ) -> Result<(), i32> {
        let sge = self.sge(offset, len)?;
        let qp = self.qp.0.as_ptr();
        // SAFETY: the QP is alive; reading its context's ops is what the C
        // inline `ibv_post_recv` does.
        let f = unsafe { (*(*qp).context).ops.post_recv };
        let Some(post) = f else {
            return Err(libc::ENOSYS);
        };
        post_one_recv(wr_id, sge, |wr, bad| {
            // SAFETY: `wr` and its SGE are valid for the call; the buffer is
            // inside the registered region, which outlives the QP. The
            // device may write it until the completion: the caller gave up
            // the slot's token.
            unsafe { post(qp, wr, bad) }
        })
    }

    /// Takes up to [`POLL_BATCH`] completions into `out`; returns how many.
    pub(in crate::rdma) fn poll(&self, out: &mut Vec<Wc>) -> Result<usize, i32> {
        self.cq.poll_into(out, |wc| Wc {
            wr_id: wc.wr_id,
            status: wc.status,
            vendor_err: wc.vendor_err,
            byte_len: wc.byte_len,
            src_qp: wc.src_qp,
            wc_flags: wc.wc_flags,
            slid: wc.slid,
        })
    }

    /// Asks for a channel event at the next completion.
    pub(in crate::rdma) fn req_notify(&self) -> Result<(), i32> {
        self.cq.req_notify()
    }

    /// Takes every pending channel event and acknowledges them; returns how
    /// many there were.
    pub(in crate::rdma) fn ack_events(&self) -> io::Result<usize> {
        let rc_cq = self.rc.as_ref().map(|rc| rc.cq_ptr());
        let (mut ud, mut rc): (c_uint, c_uint) = (0, 0);
        let result = loop {
            let mut cq: *mut ibv_cq = ptr::null_mut();
            let mut cq_context: *mut c_void = ptr::null_mut();
            // SAFETY: the channel is alive and non-blocking; the out
            // parameters are valid places.
            let ret =
                unsafe { ibv_get_cq_event(self.channel.0.as_ptr(), &mut cq, &mut cq_context) };
            if ret == 0 {
                if cq == self.cq.0.as_ptr() {
                    ud = ud.saturating_add(1);
                } else if Some(cq) == rc_cq {
                    rc = rc.saturating_add(1);
                } else {
                    log::error!("rdma: completion event for a foreign CQ");
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => break Ok((ud + rc) as usize),
                io::ErrorKind::Interrupted => continue,
                _ => break Err(e),
            }
        };
        if ud > 0 {
            // SAFETY: the CQ is alive and `ud` events were taken for it and
            // not yet acknowledged.
            unsafe { ibv_ack_cq_events(self.cq.0.as_ptr(), ud) };
        }
        if let (Some(core), true) = (&self.rc, rc > 0) {
            // SAFETY: the RC CQ is alive (`core` holds it) and `rc` events
            // were taken for it and not yet acknowledged.
            unsafe { ibv_ack_cq_events(core.cq_ptr(), rc) };
        }
        result
    }

    /// Moves the QP to the error state: outstanding work requests complete
    /// with `IBV_WC_WR_FLUSH_ERR`.
    pub(in crate::rdma) fn set_error(&self) -> Result<(), RdmaError> {
        self.qp
            .modify_state(ibv_qp_state::IBV_QPS_ERR, "ibv_modify_qp(ERR)")
    }

    /// Whether the QP is attached to `gid`.
    pub(in crate::rdma) fn is_attached(&self, gid: &[u8; 16]) -> bool {
        self.groups.contains(gid)
    }

    pub(in crate::rdma) fn attach_mcast(&mut self, gid: [u8; 16], lid: u16) -> Result<(), i32> {
        let raw = ibv_gid { raw: gid };
        // SAFETY: the QP is alive and `raw` is valid for the call.
        let ret = unsafe { ibv_attach_mcast(self.qp.0.as_ptr(), &raw, lid) };
        if ret == 0 {
            self.groups.insert(gid);
            Ok(())
        } else {
            Err(ret_errno(ret))
        }
    }

    pub(in crate::rdma) fn detach_mcast(&mut self, gid: [u8; 16], lid: u16) -> Result<(), i32> {
        let raw = ibv_gid { raw: gid };
        // SAFETY: the QP is alive and `raw` is valid for the call.
        let ret = unsafe { ibv_detach_mcast(self.qp.0.as_ptr(), &raw, lid) };
        if ret == 0 {
            self.groups.remove(&gid);
            Ok(())
        } else {
            Err(ret_errno(ret))
        }
    }

    /// Detaches the QP from every group; returns how many detaches failed
    /// (those groups stay recorded, to be retried on drop).
    pub(in crate::rdma) fn detach_all(&mut self) -> usize {
        let groups: Vec<[u8; 16]> = self.groups.iter().copied().collect();
        let mut failed = 0;
        for gid in groups {
            if let Err(errno) = self.detach_mcast(gid, 0) {
                failed += 1;
                log::error!(
                    "rdma: ibv_detach_mcast {} failed: {}",
                    crate::types::Gid(gid),
                    io::Error::from_raw_os_error(errno)
                );
            }
        }
        failed
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        self.detach_all();
    }
}

pub(super) fn verbs(call: &'static str) -> impl FnOnce() -> RdmaError {
    move || RdmaError::Verbs {
        call,
        errno: errno(),
    }
}

/// Registers the whole region (the guest's slots, or the header arena) for
/// local write.
pub(super) fn register(dev: &Device, region: &Window) -> Result<Mr, RdmaError> {
    let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as c_int;
    // SAFETY: the PD is alive. The region's memory stays mapped while the
    // window (which `Queues` keeps after the MR) exists, and it is only ever
    // accessed through volatile/atomic operations or through slices of slots
    // whose token the CPU side holds (the arena: only through the window's
    // volatile writes), so device accesses race with no Rust reference.
    let mr = unsafe { ibv_reg_mr(dev.pd(), region.as_ptr().cast(), region.len(), access) };
    NonNull::new(mr).map(Mr).ok_or_else(verbs("ibv_reg_mr"))
}

impl Mr {
    pub(super) fn lkey(&self) -> u32 {
        // SAFETY: the MR is alive; `lkey` is set at registration.
        unsafe { (*self.0.as_ptr()).lkey }
    }
}

fn create_channel(dev: &Device) -> Result<Channel, RdmaError> {
    // SAFETY: the context is alive.
    let ch = unsafe { ibv_create_comp_channel(dev.ctx()) };
    NonNull::new(ch)
        .map(Channel)
        .ok_or_else(verbs("ibv_create_comp_channel"))
}

impl Channel {
    fn fd(&self) -> RawFd {
        // SAFETY: the channel is alive; `fd` is set at creation.
        unsafe { (*self.0.as_ptr()).fd }
    }
}

pub(super) fn set_nonblocking(fd: RawFd) -> Result<(), RdmaError> {
    // SAFETY: `fd` is a channel's open descriptor (one this process made);
    // F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(verbs("fcntl(F_GETFL) on an event channel")());
    }
    // SAFETY: as above; F_SETFL takes an int.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(verbs("fcntl(F_SETFL) on an event channel")());
    }
    Ok(())
}

pub(super) fn create_cq(dev: &Device, channel: &Channel, cqe: u32) -> Result<Cq, RdmaError> {
    let cqe = c_int::try_from(cqe).map_err(|_| RdmaError::Verbs {
        call: "ibv_create_cq",
        errno: libc::EINVAL,
    })?;
    // SAFETY: the context and channel are alive; the CQ has no user context.
    let cq = unsafe { ibv_create_cq(dev.ctx(), cqe, ptr::null_mut(), channel.0.as_ptr(), 0) };
    NonNull::new(cq).map(Cq).ok_or_else(verbs("ibv_create_cq"))
}

/// Creates the UD QP; also returns how many send scatter/gather entries the
/// device granted.
fn create_qp(dev: &Device, cq: &Cq, spec: &QueueSpec) -> Result<(Qp, u32), RdmaError> {
    let mut init: ibv_qp_init_attr = zeroed();
    init.send_cq = cq.0.as_ptr();
    init.recv_cq = cq.0.as_ptr();
    init.cap = ibv_qp_cap {
        max_send_wr: spec.send_wr,
        max_recv_wr: spec.recv_wr,
        max_send_sge: spec.send_sge,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    init.qp_type = ibv_qp_type::IBV_QPT_UD;
    init.sq_sig_all = 0;
    // SAFETY: the PD and CQ are alive; `init` is valid for the call (the
    // provider writes the actual capacities back into it).
    let qp = unsafe { ibv_create_qp(dev.pd(), &mut init) };
    let qp = NonNull::new(qp)
        .map(Qp)
        .ok_or_else(verbs("ibv_create_qp"))?;
    Ok((qp, init.cap.max_send_sge.max(1)))
}

/// Posts one receive work request of `sge` through `post` (a provider's
/// `post_recv` or `post_srq_recv`, called with the request and the
/// bad-request out-parameter).
pub(super) fn post_one_recv(
    wr_id: u64,
    mut sge: ibv_sge,
    post: impl FnOnce(*mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int,
) -> Result<(), i32> {
    let mut wr = ibv_recv_wr {
        wr_id,
        next: ptr::null_mut(),
        sg_list: &mut sge,
        num_sge: 1,
    };
    let mut bad: *mut ibv_recv_wr = ptr::null_mut();
    let ret = post(&mut wr, &mut bad);
    if ret == 0 {
        Ok(())
    } else {
        Err(ret_errno(ret))
    }
}

/// The `ibv_sge` of an entry.
fn raw_sge(s: Sge) -> ibv_sge {
    ibv_sge {
        addr: s.addr,
        length: s.length,
        lkey: s.lkey,
    }
}

impl Qp {
    pub(super) fn qpn(&self) -> u32 {
        // SAFETY: the QP is alive; `qp_num` is set at creation.
        unsafe { (*self.0.as_ptr()).qp_num }
    }

    pub(super) fn modify(
        &self,
        attr: &mut ibv_qp_attr,
        mask: ibv_qp_attr_mask,
        call: &'static str,
    ) -> Result<(), RdmaError> {
        // SAFETY: the QP is alive and `attr` is valid for the call; the
        // provider reads only the fields `mask` names.
        let ret = unsafe { ibv_modify_qp(self.0.as_ptr(), attr, mask.0 as c_int) };
        if ret == 0 {
            Ok(())
        } else {
            Err(RdmaError::Verbs {
                call,
                errno: ret_errno(ret),
            })
        }
    }

    /// RESET -> INIT: a UD QP needs its P_Key index, port and Q_Key.
    fn modify_init(&self, spec: &QueueSpec) -> Result<(), RdmaError> {
        let mut attr: ibv_qp_attr = zeroed();
        attr.qp_state = ibv_qp_state::IBV_QPS_INIT;
        attr.pkey_index = spec.pkey_index;
        attr.port_num = spec.port;
        attr.qkey = spec.qkey;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_QKEY;
        self.modify(&mut attr, mask, "ibv_modify_qp(INIT)")
    }

    /// RTR -> RTS: a UD QP needs its send PSN.
    fn modify_rts(&self) -> Result<(), RdmaError> {
        let mut attr: ibv_qp_attr = zeroed();
        attr.qp_state = ibv_qp_state::IBV_QPS_RTS;
        attr.sq_psn = 0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE | ibv_qp_attr_mask::IBV_QP_SQ_PSN;
        self.modify(&mut attr, mask, "ibv_modify_qp(RTS)")
    }

    /// A transition that needs only the new state (INIT -> RTR, any -> ERR).
    pub(super) fn modify_state(
        &self,
        state: ibv_qp_state::Type,
        call: &'static str,
    ) -> Result<(), RdmaError> {
        let mut attr: ibv_qp_attr = zeroed();
        attr.qp_state = state;
        self.modify(&mut attr, ibv_qp_attr_mask::IBV_QP_STATE, call)
    }
}
