//! `SharedMemory`: creation, sharing through descriptors, windows.

use std::io;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;

use ivshmem::{EventFd, SharedMemory};

#[test]
fn create_is_zeroed_and_sized() {
    let shm = Arc::new(SharedMemory::create("ivshmem-test", 3 * 4096 + 100).unwrap());
    assert_eq!(shm.len(), 3 * 4096 + 100);
    assert!(!shm.is_empty());
    let st = nix::sys::stat::fstat(shm.fd()).unwrap();
    assert_eq!(st.st_size, 3 * 4096 + 100);
    let mut buf = vec![0xffu8; shm.len()];
    shm.window().read_bytes(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn create_rejects_zero_length_and_bad_names() {
    let err = SharedMemory::create("ivshmem-test", 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(SharedMemory::create("nul\0inside", 4096).is_err());
}

#[test]
fn two_mappings_of_one_file_see_each_other() {
    let a = Arc::new(SharedMemory::create("ivshmem-test", 8192).unwrap());
    let b = Arc::new(SharedMemory::from_fd(a.try_clone_fd().unwrap()).unwrap());
    assert_eq!(b.len(), 8192);
    let (wa, wb) = (a.window(), b.window());
    wa.write_bytes(5000, b"written through a").unwrap();
    let mut got = [0u8; 17];
    wb.read_bytes(5000, &mut got).unwrap();
    assert_eq!(&got, b"written through a");
    wb.store_u32(64, 0x1234_5678, Release).unwrap();
    assert_eq!(wa.load_u32(64, Acquire).unwrap(), 0x1234_5678);
    // Bounds are the window's: one byte past the end is refused.
    assert!(wb.read_bytes(8192, &mut [0u8; 1]).is_err());
}

#[test]
fn from_fd_rejects_what_has_no_size() {
    let event = EventFd::new().unwrap();
    let err = SharedMemory::from_fd(event.try_clone().unwrap().into()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn window_keeps_the_mapping_alive() {
    let shm = Arc::new(SharedMemory::create("ivshmem-test", 4096).unwrap());
    let window = shm.window().sub(1024, 1024).unwrap();
    drop(shm);
    window.write_bytes(1000, b"still mapped").unwrap();
    let mut got = [0u8; 12];
    window.read_bytes(1000, &mut got).unwrap();
    assert_eq!(&got, b"still mapped");
}
