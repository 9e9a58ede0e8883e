//! Address handles.

use alloc::sync::Arc;
use core::ptr::NonNull;

use rdma_sys::{ibv_ah, ibv_ah_attr, ibv_create_ah, ibv_destroy_ah, ibv_gid, ibv_global_route};

use super::device::Device;
use super::{errno, ret_errno, zeroed};

/// What an address handle points at (the fields of `ibv_ah_attr` the
/// provider sets; host byte order).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::rdma) struct AhSpec {
    pub port: u8,
    pub dlid: u16,
    /// Service level (from a path record; 0 otherwise).
    pub sl: u8,
    /// `ibv_rate` (the IB rate encoding, as path records carry it); 0 is
    /// the port's rate.
    pub static_rate: u8,
    /// The global route header, if any. RoCE always needs one.
    pub grh: Option<Grh>,
}

/// The GRH fields of an address handle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::rdma) struct Grh {
    pub dgid: [u8; 16],
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
}

/// One address handle on a device's PD; destroyed on drop.
pub(in crate::rdma) struct Ah {
    ptr: NonNull<ibv_ah>,
    /// Keeps the PD alive until the AH is destroyed.
    _dev: Arc<Device>,
}

// SAFETY: an AH is an immutable device object; libibverbs allows using and
// destroying it from any thread.
unsafe impl Send for Ah {}

impl Ah {
    /// Creates an address handle. On RoCE the kernel resolves the
    /// destination MAC here, which may take a moment (neighbour discovery).
    pub(in crate::rdma) fn create(dev: &Arc<Device>, spec: &AhSpec) -> Result<Ah, i32> {
        let mut attr: ibv_ah_attr = zeroed();
        attr.port_num = spec.port;
        attr.dlid = spec.dlid;
        attr.sl = spec.sl;
        attr.static_rate = spec.static_rate;
        if let Some(grh) = spec.grh {
            attr.is_global = 1;
            attr.grh = ibv_global_route {
                dgid: ibv_gid { raw: grh.dgid },
                flow_label: grh.flow_label & 0x000f_ffff,
                sgid_index: grh.sgid_index,
                hop_limit: grh.hop_limit,
                traffic_class: grh.traffic_class,
            };
        }
        // SAFETY: the PD is alive (`dev`) and `attr` is a valid attribute
        // struct that libibverbs only reads.
        let ah = unsafe { ibv_create_ah(dev.pd(), &mut attr) };
        let ptr = NonNull::new(ah).ok_or_else(errno)?;
        Ok(Ah {
            ptr,
            _dev: Arc::clone(dev),
        })
    }

    pub(super) fn as_ptr(&self) -> *mut ibv_ah {
        self.ptr.as_ptr()
    }
}

impl Drop for Ah {
    fn drop(&mut self) {
        // SAFETY: the AH came from `ibv_create_ah` and is destroyed once; its
        // PD is still alive (`_dev` drops after this).
        let ret = unsafe { ibv_destroy_ah(self.ptr.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_destroy_ah failed: errno {}", ret_errno(ret));
        }
    }
}
