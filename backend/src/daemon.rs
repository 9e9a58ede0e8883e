//! The worker process: the fabric, the seats on worker threads, the control
//! socket, and the link to the supervisor that hands it guests.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ivshmem::EventFd;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::capture::FabricCapture;
use crate::config::Config;
use crate::control::Control;
use crate::dhcp::DhcpServer;
use crate::gateway::Gateway;
use crate::handoff::{self, Handoff, Reporter};
use crate::port_security::SeatDirectory;
use crate::provider::{ib_mtu, Fabric};
use crate::seat::Seat;
use crate::worker::{Snapshots, Worker};

/// A fresh epoch for this run of the worker: never zero, and different from
/// the last run's with overwhelming likelihood (restarted sessions also
/// check against the epoch in their window).
fn new_epoch() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    (nanos as u32) | 1
}

struct Route {
    inbox: Sender<Handoff>,
    bell: Arc<EventFd>,
}

/// Why the worker stopped.
pub enum WorkerError {
    /// It could not start (no device, a socket in use...): restarting it
    /// would not help.
    Startup(Box<dyn std::error::Error>),
    Running(Box<dyn std::error::Error>),
}

/// Runs until SIGTERM, or until the supervisor goes away.
pub fn run_worker(config: Config, supervisor: UnixStream) -> Result<(), WorkerError> {
    let directory = SeatDirectory::for_guests(&config.guests);
    let (fabric, control, gateway) = start(&config, &directory).map_err(WorkerError::Startup)?;
    let dhcp = start_dhcp(&config, &fabric, &directory).map_err(WorkerError::Startup)?;
    if let Some(d) = &dhcp {
        control.set_dhcp(d.stats());
    }
    serve(
        config, supervisor, fabric, control, gateway, directory, dhcp,
    )
    .map_err(WorkerError::Running)
}

/// The DHCP server, with `--dhcp`: on the fabric port after the gateway's.
fn start_dhcp(
    config: &Config,
    fabric: &Fabric,
    directory: &Arc<SeatDirectory>,
) -> Result<Option<DhcpServer>, Box<dyn std::error::Error>> {
    let Some(d) = &config.dhcp else {
        return Ok(None);
    };
    let number = u16::try_from(config.guests.len() + 2).map_err(|_| "too many guests")?;
    let server = DhcpServer::start(
        config,
        d,
        fabric,
        number,
        ib_mtu(config.mtu),
        directory.clone(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Some(server))
}

/// What must work before the worker serves anyone.
fn start(
    config: &Config,
    directory: &Arc<SeatDirectory>,
) -> Result<(Fabric, Control, Option<Gateway>), Box<dyn std::error::Error>> {
    let fabric = Fabric::open(config)?;
    let snapshots: Snapshots = Arc::new(Mutex::new(vec![None; config.guests.len()]));
    let control = Control::bind(
        &config.control,
        config.socket_group.as_ref(),
        fabric.name(),
        0,
        snapshots,
    )?;
    if let Fabric::Sim(sim) = &fabric {
        control.set_sim_fabric(sim.clone());
    }
    let gateway = match &config.gateway {
        Some(g) => {
            let number = u16::try_from(config.guests.len() + 1).map_err(|_| "too many guests")?;
            let gw = Gateway::start(g, &fabric, number, ib_mtu(config.mtu))
                .map_err(|e| format!("gateway: {e}"))?
                .with_directory(directory.clone());
            control.set_gateway(gw.stats(), g.tap.clone());
            Some(gw)
        }
        None => None,
    };
    Ok((fabric, control, gateway))
}

fn serve(
    config: Config,
    supervisor: UnixStream,
    fabric: Fabric,
    control: Control,
    gateway: Option<Gateway>,
    directory: Arc<SeatDirectory>,
    dhcp: Option<DhcpServer>,
) -> Result<(), Box<dyn std::error::Error>> {
    let epoch = new_epoch();
    let mtu = ib_mtu(config.mtu);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let snapshots = control.snapshots();
    let capture = match &config.pcap {
        Some(path) => {
            log::info!("capturing fabric traffic to {}", path.display());
            Some(FabricCapture::create(path)?)
        }
        None => None,
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = config
        .workers
        .unwrap_or_else(|| crate::config::default_workers(cores, config.busy_poll_us))
        .clamp(1, config.guests.len().max(1));
    let reporter = Reporter::new(supervisor.try_clone()?);
    let mut shares: Vec<Vec<Seat>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, g) in config.guests.iter().enumerate() {
        shares[i % workers].push(
            Seat::new(i, g.clone(), epoch, capture.clone(), reporter.clone())
                .with_directory(directory.clone()),
        );
    }
    control.set_epoch(epoch);
    // Its own thread: a slow control client must not hold up the
    // supervisor link below.
    let control_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control.run(&stop))?
    };
    log::info!(
        "ib-backend: provider {}, epoch {epoch:#x}, {} guests on {workers} worker thread(s), control {}, busy polling {}",
        fabric.name(),
        config.guests.len(),
        config.control.display(),
        match config.busy_poll_us {
            0 => "off".to_owned(),
            us => format!("{us} µs"),
        }
    );
    let gateway_thread = match gateway {
        Some(gw) => {
            let stop = stop.clone();
            Some(
                std::thread::Builder::new()
                    .name("gateway".into())
                    .spawn(move || gw.run(stop))?,
            )
        }
        None => None,
    };
    let dhcp_thread = match dhcp {
        Some(server) => {
            let stop = stop.clone();
            Some(
                std::thread::Builder::new()
                    .name("dhcp".into())
                    .spawn(move || server.run(stop))?,
            )
        }
        None => None,
    };
    let mut routes = Vec::new();
    let mut handles = Vec::new();
    for (i, share) in shares.into_iter().enumerate() {
        let (tx, rx) = channel();
        let bell = Arc::new(EventFd::new()?);
        routes.push(Route {
            inbox: tx,
            bell: bell.clone(),
        });
        let worker = Worker {
            seats: share,
            fabric: fabric.clone(),
            mtu,
            stop: stop.clone(),
            snapshots: snapshots.clone(),
            inbox: rx,
            bell,
            watched: Vec::new(),
            busy_poll: Duration::from_micros(u64::from(config.busy_poll_us)),
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    while !stop.load(Ordering::Relaxed) {
        let readable = {
            let mut fds = [PollFd::new(supervisor.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(50u16)) {
                Ok(_) => fds[0].revents().is_some_and(|r| !r.is_empty()),
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if readable {
            match handoff::recv(&supervisor) {
                Ok(Some(message)) => {
                    let seat = message.seat() as usize;
                    let route = &routes[seat % routes.len()];
                    if route.inbox.send(message).is_ok() {
                        let _ = route.bell.notify();
                    }
                }
                Ok(None) => {
                    log::warn!("the supervisor went away; shutting down");
                    stop.store(true, Ordering::Relaxed);
                }
                Err(e) => log::error!("supervisor link: {e}"),
            }
        }
        if let Some(c) = &capture {
            c.flush();
        }
        if handles.iter().any(|h| h.is_finished()) {
            log::error!("a worker thread stopped unexpectedly; shutting down");
            stop.store(true, Ordering::Relaxed);
        }
    }
    log::info!("ib-backend worker: shutting down");
    for h in handles {
        let _ = h.join();
    }
    let _ = control_thread.join();
    if let Some(h) = gateway_thread {
        let _ = h.join();
    }
    if let Some(h) = dhcp_thread {
        let _ = h.join();
    }
    if let Some(c) = &capture {
        c.flush();
    }
    let _ = std::fs::remove_file(&config.control);
    Ok(())
}
