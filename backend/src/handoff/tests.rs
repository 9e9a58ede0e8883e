use super::*;
use std::io::Write;

#[test]
fn session_descriptors_arrive_and_work() -> io::Result<()> {
    let (a, b) = UnixStream::pair()?;
    let (mut client_far, client_near) = UnixStream::pair()?;
    let memory = ivshmem::SharedMemory::create("handoff-test", 4096)?;
    let doorbell = ivshmem::EventFd::new()?;
    let interrupt = ivshmem::EventFd::new()?;
    let fds = SessionFds {
        client: client_near,
        memory: memory.try_clone_fd()?,
        doorbell: doorbell.try_clone()?.into(),
        interrupt: interrupt.try_clone()?.into(),
    };
    send(
        &a,
        &Handoff::Session {
            seat: 7,
            restart: true,
            fds,
        },
    )?;
    send(&a, &Handoff::Refused { seat: 3 })?;
    let Some(Handoff::Session { seat, restart, fds }) = recv(&b)? else {
        panic!("expected a session");
    };
    assert_eq!((seat, restart), (7, true));
    // The descriptors are the same objects.
    let mem = std::sync::Arc::new(ivshmem::SharedMemory::from_fd(fds.memory)?);
    assert_eq!(mem.len(), 4096);
    ivshmem::EventFd::from_fd(fds.doorbell).notify()?;
    assert_eq!(doorbell.drain()?, 1);
    let mut c = fds.client;
    c.write_all(b"hi")?;
    let mut buf = [0u8; 2];
    client_far.read_exact(&mut buf)?;
    assert_eq!(&buf, b"hi");
    assert!(matches!(recv(&b)?, Some(Handoff::Refused { seat: 3 })));
    drop(a);
    assert!(recv(&b)?.is_none());
    Ok(())
}

#[test]
fn xen_messages_round_trip() -> io::Result<()> {
    let (a, b) = UnixStream::pair()?;
    let publication = FrontendPublication {
        window_pages: 1030,
        dir_refs: vec![100, 101],
        event_channel: 9,
    };
    send(
        &a,
        &Handoff::Xen {
            seat: 2,
            restart: true,
            domid: 5,
            publication: publication.clone(),
        },
    )?;
    send(
        &a,
        &Handoff::End {
            seat: 2,
            domid: 5,
            reason: EndReason::DomainGone,
        },
    )?;
    send(&a, &Handoff::XenRefused { seat: 1, domid: 7 })?;
    send(
        &a,
        &Handoff::End {
            seat: 0,
            domid: 65535,
            reason: EndReason::FrontendClosed,
        },
    )?;
    match recv(&b)? {
        Some(Handoff::Xen {
            seat: 2,
            restart: true,
            domid: 5,
            publication: p,
        }) => assert_eq!(p, publication),
        _ => panic!("expected the Xen handoff"),
    }
    assert!(matches!(
        recv(&b)?,
        Some(Handoff::End {
            seat: 2,
            domid: 5,
            reason: EndReason::DomainGone
        })
    ));
    assert!(matches!(
        recv(&b)?,
        Some(Handoff::XenRefused { seat: 1, domid: 7 })
    ));
    assert!(matches!(
        recv(&b)?,
        Some(Handoff::End {
            seat: 0,
            domid: 65535,
            reason: EndReason::FrontendClosed
        })
    ));
    Ok(())
}

#[test]
fn reports_round_trip_and_long_reasons_are_cut() -> io::Result<()> {
    let (worker, supervisor) = UnixStream::pair()?;
    let reporter = Reporter::new(worker.try_clone()?);
    reporter.send(&Report::XenConnected { seat: 1, domid: 3 });
    let long = "é".repeat(MAX_REASON);
    reporter.send(&Report::XenFailed {
        seat: 1,
        domid: 3,
        reason: long.clone(),
    });
    assert_eq!(
        recv_report(&supervisor)?,
        Some(Report::XenConnected { seat: 1, domid: 3 })
    );
    let Some(Report::XenFailed {
        seat,
        domid,
        reason,
    }) = recv_report(&supervisor)?
    else {
        panic!("expected a failure report");
    };
    assert_eq!((seat, domid), (1, 3));
    assert!(reason.len() <= MAX_REASON && long.starts_with(&reason));
    assert_eq!(reason.chars().count(), MAX_REASON / 2);
    drop((worker, reporter));
    assert_eq!(recv_report(&supervisor)?, None);
    Ok(())
}

#[test]
fn malformed_messages_are_errors() -> io::Result<()> {
    let (a, b) = UnixStream::pair()?;
    // A body that claims more directory pages than exist.
    let mut body = Body::new();
    body.u32(5).u32(1).u32(9).u32(MAX_DIR_PAGES + 1);
    send_frame(&a, &frame(KIND_XEN, 0, 0, body.bytes()), &[])?;
    assert!(recv(&b).is_err());
    // A domid that does not fit in 16 bits.
    let mut body = Body::new();
    body.u32(70000);
    send_frame(&a, &frame(KIND_XEN_REFUSED, 0, 0, body.bytes()), &[])?;
    assert!(recv(&b).is_err());
    // Trailing bytes.
    let mut body = Body::new();
    body.u32(5).u32(1);
    send_frame(&a, &frame(KIND_XEN_REFUSED, 0, 0, body.bytes()), &[])?;
    assert!(recv(&b).is_err());
    // A report kind sent as a handoff, and the reverse.
    send(&a, &Handoff::Refused { seat: 0 })?;
    assert!(recv_report(&b).is_err());
    send_report(&a, &Report::XenConnected { seat: 0, domid: 1 })?;
    assert!(recv(&b).is_err());
    Ok(())
}
