//! The device list, an opened device and its protection domain, and the
//! queries made on them.

use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_int, CStr};
use core::ptr::NonNull;

use rdma_sys::{
    ibv_alloc_pd, ibv_close_device, ibv_context, ibv_dealloc_pd, ibv_device, ibv_device_attr,
    ibv_free_device_list, ibv_get_device_list, ibv_get_device_name, ibv_gid, ibv_open_device,
    ibv_pd, ibv_port_attr, ibv_query_device, ibv_query_gid, ibv_query_pkey, ibv_query_port,
};

use super::{errno, ret_errno, zeroed};
use crate::rdma::error::RdmaError;

/// The array `ibv_get_device_list` returns; freed on drop.
pub(in crate::rdma) struct DeviceList {
    list: NonNull<*mut ibv_device>,
    len: usize,
}

impl DeviceList {
    /// The devices libibverbs knows. `Ok(None)` when there are none: an empty
    /// list, or `ENOSYS` (no kernel support at all).
    pub(in crate::rdma) fn get() -> Result<Option<DeviceList>, RdmaError> {
        let mut count: c_int = 0;
        // SAFETY: `count` is a valid place for the device count.
        let raw = unsafe { ibv_get_device_list(&mut count) };
        let Some(list) = NonNull::new(raw) else {
            return match errno() {
                libc::ENOSYS => Ok(None),
                e => Err(RdmaError::Verbs {
                    call: "ibv_get_device_list",
                    errno: e,
                }),
            };
        };
        let list = DeviceList {
            list,
            len: usize::try_from(count).unwrap_or(0),
        };
        Ok((list.len > 0).then_some(list))
    }

    fn device(&self, index: usize) -> Option<*mut ibv_device> {
        if index >= self.len {
            return None;
        }
        // SAFETY: the array holds `len` device pointers (and a NULL after
        // them), and `index < len`.
        let dev = unsafe { *self.list.as_ptr().add(index) };
        (!dev.is_null()).then_some(dev)
    }

    /// The device names, in list order.
    pub(in crate::rdma) fn names(&self) -> Vec<String> {
        (0..self.len)
            .filter_map(|i| self.device(i))
            .map(|dev| {
                // SAFETY: `dev` is a device of this still-allocated list;
                // the name it returns lives as long as the list.
                let name = unsafe { ibv_get_device_name(dev) };
                if name.is_null() {
                    return String::new();
                }
                // SAFETY: libibverbs returns a NUL-terminated string that
                // lives as long as the list (which `self` keeps alive).
                unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// Opens device `index` and allocates a protection domain on it.
    pub(in crate::rdma) fn open(&self, index: usize) -> Result<Device, RdmaError> {
        let dev = self.device(index).ok_or(RdmaError::Verbs {
            call: "ibv_open_device",
            errno: libc::ENODEV,
        })?;
        // SAFETY: `dev` is a device of this list, which is still allocated.
        // The context stays valid after the list is freed (ibv_open_device(3)).
        let ctx = unsafe { ibv_open_device(dev) };
        let ctx = Ctx(NonNull::new(ctx).ok_or_else(|| RdmaError::Verbs {
            call: "ibv_open_device",
            errno: errno(),
        })?);
        // SAFETY: `ctx` is an open context.
        let pd = unsafe { ibv_alloc_pd(ctx.0.as_ptr()) };
        let pd = NonNull::new(pd).ok_or_else(|| RdmaError::Verbs {
            call: "ibv_alloc_pd",
            errno: errno(),
        })?;
        Ok(Device { pd, ctx })
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: `list` came from `ibv_get_device_list` and is freed once.
        unsafe { ibv_free_device_list(self.list.as_ptr()) }
    }
}

/// An open device context; closed on drop.
struct Ctx(NonNull<ibv_context>);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the context came from `ibv_open_device` and is closed once;
        // `Device` frees its PD before this runs (field order).
        let ret = unsafe { ibv_close_device(self.0.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_close_device failed: errno {}", ret_errno(ret));
        }
    }
}

/// An open device and one protection domain on it.
pub(in crate::rdma) struct Device {
    pd: NonNull<ibv_pd>,
    /// Declared after `pd`, so it is closed after the PD is freed.
    ctx: Ctx,
}

// SAFETY: libibverbs contexts and PDs may be used from any thread; `Device`
// only hands out the pointers inside this module, to calls that libibverbs
// serialises itself.
unsafe impl Send for Device {}
// SAFETY: as above; `&Device` offers only thread-safe verbs calls.
unsafe impl Sync for Device {}

/// Device limits the provider checks a layout against.
#[derive(Clone, Copy, Debug)]
pub(in crate::rdma) struct DeviceCaps {
    pub max_qp_wr: usize,
    pub max_cqe: usize,
    pub max_ah: usize,
    /// Scatter/gather entries per work request (0: the device did not say).
    pub max_sge: usize,
    pub phys_port_cnt: u8,
}

/// The port attributes the provider uses.
#[derive(Clone, Copy, Debug)]
pub(in crate::rdma) struct PortInfo {
    pub state: u32,
    pub active_mtu: u32,
    pub gid_tbl_len: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub link_layer: u8,
}

impl Device {
    pub(super) fn ctx(&self) -> *mut ibv_context {
        self.ctx.0.as_ptr()
    }

    pub(super) fn pd(&self) -> *mut ibv_pd {
        self.pd.as_ptr()
    }

    pub(in crate::rdma) fn query_device(&self) -> Result<DeviceCaps, RdmaError> {
        let mut attr: ibv_device_attr = zeroed();
        // SAFETY: the context is open and `attr` is a valid out-parameter.
        let ret = unsafe { ibv_query_device(self.ctx(), &mut attr) };
        if ret != 0 {
            return Err(RdmaError::Verbs {
                call: "ibv_query_device",
                errno: ret_errno(ret),
            });
        }
        let count = |n: c_int| usize::try_from(n).unwrap_or(0);
        Ok(DeviceCaps {
            max_qp_wr: count(attr.max_qp_wr),
            max_cqe: count(attr.max_cqe),
            max_ah: count(attr.max_ah),
            max_sge: count(attr.max_sge),
            phys_port_cnt: attr.phys_port_cnt,
        })
    }

    pub(in crate::rdma) fn query_port(&self, port: u8) -> Result<PortInfo, RdmaError> {
        let mut attr: ibv_port_attr = zeroed();
        // SAFETY: the context is open. The exported `ibv_query_port` symbol
        // fills the older, shorter `_compat_ibv_port_attr`, a prefix of
        // `ibv_port_attr`; `attr` is the full, zeroed struct, which is what
        // the C inline `___ibv_query_port` passes on this path too.
        let ret = unsafe { ibv_query_port(self.ctx(), port, (&raw mut attr).cast()) };
        if ret != 0 {
            return Err(RdmaError::Verbs {
                call: "ibv_query_port",
                errno: ret_errno(ret),
            });
        }
        Ok(PortInfo {
            state: attr.state,
            active_mtu: attr.active_mtu,
            gid_tbl_len: u32::try_from(attr.gid_tbl_len).unwrap_or(0),
            pkey_tbl_len: attr.pkey_tbl_len,
            lid: attr.lid,
            link_layer: attr.link_layer,
        })
    }

    pub(in crate::rdma) fn query_gid(&self, port: u8, index: u8) -> Result<[u8; 16], RdmaError> {
        let mut gid = ibv_gid { raw: [0; 16] };
        // SAFETY: the context is open and `gid` is a valid out-parameter.
        let ret = unsafe { ibv_query_gid(self.ctx(), port, c_int::from(index), &mut gid) };
        if ret != 0 {
            return Err(RdmaError::Verbs {
                call: "ibv_query_gid",
                errno: ret_errno(ret),
            });
        }
        // SAFETY: every bit pattern is a valid `[u8; 16]`.
        Ok(unsafe { gid.raw })
    }

    /// The P_Key at `index`, in host order.
    pub(in crate::rdma) fn query_pkey(&self, port: u8, index: u16) -> Result<u16, RdmaError> {
        let mut pkey: u16 = 0;
        // SAFETY: the context is open and `pkey` is a valid out-parameter.
        let ret = unsafe { ibv_query_pkey(self.ctx(), port, c_int::from(index), &mut pkey) };
        if ret != 0 {
            return Err(RdmaError::Verbs {
                call: "ibv_query_pkey",
                errno: ret_errno(ret),
            });
        }
        // `ibv_query_pkey` returns the key in network byte order.
        Ok(u16::from_be(pkey))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: the PD came from `ibv_alloc_pd` and is freed once. Every
        // MR, QP and AH on it holds an `Arc<Device>` and so is gone already.
        let ret = unsafe { ibv_dealloc_pd(self.pd.as_ptr()) };
        if ret != 0 {
            log::error!("rdma: ibv_dealloc_pd failed: errno {}", ret_errno(ret));
        }
    }
}
