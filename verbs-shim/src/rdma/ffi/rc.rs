//! Connected mode's verbs objects: the big-slot region's registration, a
//! shared receive queue (the big receive pool), the RC CQ (on the port's
//! completion channel, so one descriptor wakes both), and the RC QPs.
//!
//! Ownership: [`RcCore`] (SRQ, CQ, MR, region, channel, device, declared
//! and so dropped in that order) is shared by the port and by every
//! [`RcQp`], so it outlives all of them.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ffi::c_int;
use core::ptr::{self, NonNull};

use rdma_sys::{
    ibv_create_qp, ibv_create_srq, ibv_destroy_srq, ibv_qp_attr, ibv_qp_attr_mask, ibv_qp_cap,
    ibv_qp_init_attr, ibv_qp_state, ibv_qp_type, ibv_send_flags, ibv_send_wr, ibv_sge, ibv_srq,
    ibv_srq_init_attr, ibv_wr_opcode,
};
use ring::Window;

use super::device::Device;
use super::queues::{create_cq, post_one_recv, register, verbs, Channel, Cq, Mr, Qp};
use super::{ret_errno, zeroed, Zeroable};
use crate::rdma::error::RdmaError;

// SAFETY: `ibv_srq_init_attr` is integers and one raw pointer.
unsafe impl Zeroable for ibv_srq_init_attr {}

/// A shared receive queue; destroyed on drop.
struct Srq(NonNull<ibv_srq>);

impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: the SRQ came from `ibv_create_srq` and is destroyed once,
        // after every QP that used it (they hold the `RcCore`).
        let ret = unsafe { ibv_destroy_srq(self.0.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_destroy_srq failed: errno {}", ret_errno(ret));
        }
    }
}

/// The objects every RC QP of a port shares.
pub(in crate::rdma) struct RcCore {
    srq: Srq,
    cq: Cq,
    /// Held for its `Drop`.
    _mr: Mr,
    /// The big-slot region; outlives its registration.
    region: Window,
    /// The completion channel the CQ reports to; outlives the CQ.
    _channel: Arc<Channel>,
    /// The PD and context; outlive everything above.
    _dev: Arc<Device>,
    lkey: u32,
}

// SAFETY: verbs objects may be used from any thread (libibverbs locks what
// it must); the port uses them from the thread that owns it.
unsafe impl Send for RcCore {}
// SAFETY: as above; `&RcCore` offers only thread-safe verbs calls.
unsafe impl Sync for RcCore {}

/// The fields of an RC work completion the provider reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(in crate::rdma) struct RcWc {
    pub wr_id: u64,
    pub status: u32,
    pub byte_len: u32,
    pub qp_num: u32,
}

impl RcCore {
    /// Registers `region` and creates the SRQ (`srq_wr` receives) and the
    /// CQ (`cqe` entries) on `channel`.
    pub(super) fn create(
        dev: Arc<Device>,
        channel: Arc<Channel>,
        region: Window,
        cqe: u32,
        srq_wr: u32,
    ) -> Result<Arc<RcCore>, RdmaError> {
        let mr = register(&dev, &region)?;
        let cq = create_cq(&dev, &channel, cqe)?;
        let mut init: ibv_srq_init_attr = zeroed();
        init.attr.max_wr = srq_wr;
        init.attr.max_sge = 1;
        // SAFETY: the PD is alive and `init` is valid for the call.
        let srq = unsafe { ibv_create_srq(dev.pd(), &mut init) };
        let srq = NonNull::new(srq)
            .map(Srq)
            .ok_or_else(verbs("ibv_create_srq"))?;
        let lkey = mr.lkey();
        Ok(Arc::new(RcCore {
            srq,
            cq,
            _mr: mr,
            region,
            _channel: channel,
            _dev: dev,
            lkey,
        }))
    }

    pub(in crate::rdma) fn cq_ptr(&self) -> *mut rdma_sys::ibv_cq {
        self.cq.0.as_ptr()
    }

    /// The SGE for `len` bytes at `offset` of the region, or `EINVAL`.
    fn sge(&self, offset: usize, len: u32) -> Result<ibv_sge, i32> {
        let end = offset.checked_add(len as usize).ok_or(libc::EINVAL)?;
        if end > self.region.len() {
            return Err(libc::EINVAL);
        }
        Ok(ibv_sge {
            addr: self.region.as_ptr() as u64 + offset as u64,
            length: len,
            lkey: self.lkey,
        })
    }

    /// Adds a receive of `len` bytes at `offset` to the SRQ.
    pub(in crate::rdma) fn post_srq_recv(
        &self,
        wr_id: u64,
        offset: usize,
        len: u32,
    ) -> Result<(), i32> {
        let sge = self.sge(offset, len)?;
        let srq = self.srq.0.as_ptr();
        // SAFETY: the SRQ is alive; reading its context's ops is what the C
        // inline `ibv_post_srq_recv` does.
        let f = unsafe { (*(*srq).context).ops.post_srq_recv };
        let Some(post) = f else {
            return Err(libc::ENOSYS);
        };
        post_one_recv(wr_id, sge, |wr, bad| {
            // SAFETY: `wr` and its SGE are valid for the call; the buffer is
            // inside the registered region, which outlives the SRQ. The
            // device may write it until the completion: the caller gave up
            // the token.
            unsafe { post(srq, wr, bad) }
        })
    }

    /// Takes up to `POLL_BATCH` completions into `out`; returns how many.
    pub(in crate::rdma) fn poll(&self, out: &mut Vec<RcWc>) -> Result<usize, i32> {
        self.cq.poll_into(out, |wc| RcWc {
            wr_id: wc.wr_id,
            status: wc.status,
            byte_len: wc.byte_len,
            qp_num: wc.qp_num,
        })
    }

    /// Asks for a channel event at the next completion.
    pub(in crate::rdma) fn req_notify(&self) -> Result<(), i32> {
        self.cq.req_notify()
    }
}

/// One RC QP on the port's SRQ and RC CQ; destroyed on drop, before the
/// core it holds.
pub(in crate::rdma) struct RcQp {
    qp: Qp,
    core: Arc<RcCore>,
}

// SAFETY: a QP may be used from any thread (libibverbs locks what it
// must); the port uses it from the thread that owns the port.
unsafe impl Send for RcQp {}

impl RcQp {
    /// An RC QP in RESET that takes `send_wr` sends of one SGE.
    pub(in crate::rdma) fn create(core: &Arc<RcCore>, send_wr: u32) -> Result<RcQp, RdmaError> {
        let mut init: ibv_qp_init_attr = zeroed();
        init.send_cq = core.cq.0.as_ptr();
        init.recv_cq = core.cq.0.as_ptr();
        init.srq = core.srq.0.as_ptr();
        init.cap = ibv_qp_cap {
            max_send_wr: send_wr,
            max_recv_wr: 0,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        // SAFETY: the PD, CQ and SRQ are alive (the core holds them);
        // `init` is valid for the call.
        let qp = unsafe { ibv_create_qp(core._dev.pd(), &mut init) };
        let qp = NonNull::new(qp)
            .map(Qp)
            .ok_or_else(verbs("ibv_create_qp(RC)"))?;
        Ok(RcQp {
            qp,
            core: Arc::clone(core),
        })
    }

    pub(in crate::rdma) fn qpn(&self) -> u32 {
        self.qp.qpn()
    }

    /// Applies attributes from `rdma_init_qp_attr`.
    pub(in crate::rdma) fn modify(
        &self,
        mut attr: ibv_qp_attr,
        mask: c_int,
        call: &'static str,
    ) -> Result<(), RdmaError> {
        let mask = ibv_qp_attr_mask(u32::try_from(mask).map_err(|_| RdmaError::Verbs {
            call,
            errno: libc::EINVAL,
        })?);
        self.qp.modify(&mut attr, mask, call)
    }

    /// Moves the QP to the error state: its outstanding sends complete
    /// flushed.
    pub(in crate::rdma) fn set_error(&self) -> Result<(), RdmaError> {
        self.qp
            .modify_state(ibv_qp_state::IBV_QPS_ERR, "ibv_modify_qp(RC ERR)")
    }

    /// Posts one signaled send of `len` bytes at `offset` of the big
    /// region.
    pub(in crate::rdma) fn post_send(
        &self,
        wr_id: u64,
        offset: usize,
        len: u32,
    ) -> Result<(), i32> {
        let mut sge = self.core.sge(offset, len)?;
        let mut wr: ibv_send_wr = zeroed();
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        let qp = self.qp.0.as_ptr();
        // SAFETY: the QP is alive; as in the C inline `ibv_post_send`.
        let f = unsafe { (*(*qp).context).ops.post_send };
        let Some(post) = f else {
            return Err(libc::ENOSYS);
        };
        // SAFETY: `wr` and `sge` are valid for the call (copied into the
        // send queue); the SGE is inside the registered big region, which
        // outlives the QP (the core holds it).
        let ret = unsafe { post(qp, &mut wr, &mut bad) };
        if ret == 0 {
            Ok(())
        } else {
            Err(ret_errno(ret))
        }
    }
}
