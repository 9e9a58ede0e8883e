//! Address handles.

use alloc::sync::Arc;
use core::ptr::NonNull;

use rdma_sys::{ibv_ah, ibv_ah_attr, ibv_create_ah, ibv_destroy_ah, ibv_gid, ibv_global_route};

use super::device::Device;
use super::{errno, ret_errno, zeroed};

/// What an address handle points at.
#[derive(Clone, Copy, Debug)]
pub(in crate::rdma) struct AhSpec {
    pub port: u8,
    pub dlid: u16,
    /// With a GRH: the destination GID, the source GID index and the hop
    /// limit. RoCE always needs one.
    pub grh: Option<([u8; 16], u8, u8)>,
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
        if let Some((dgid, sgid_index, hop_limit)) = spec.grh {
            attr.is_global = 1;
            attr.grh = ibv_global_route {
                dgid: ibv_gid { raw: dgid },
                flow_label: 0,
                sgid_index,
                hop_limit,
                traffic_class: 0,
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
