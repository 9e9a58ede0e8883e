//! Starting and stopping the daemon: seats, workers, the control socket and
//! signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::control::Control;
use crate::provider::{ib_mtu, Fabric};
use crate::seat::Seat;
use crate::worker::{Snapshots, Worker};

/// A fresh epoch for this run of the back end: never zero, and different
/// from the last run's with overwhelming likelihood.
fn new_epoch() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    (nanos as u32) | 1
}

/// Runs until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let fabric = Fabric::open(&config)?;
    let epoch = new_epoch();
    let mtu = ib_mtu(config.mtu);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let snapshots: Snapshots = Arc::new(Mutex::new(vec![None; config.guests.len()]));
    let mut seats = Vec::new();
    for (i, g) in config.guests.iter().enumerate() {
        seats.push(Seat::new(i, g.clone(), epoch)?);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = config.workers.unwrap_or(cores).clamp(1, seats.len().max(1));
    let mut shares: Vec<Vec<Seat>> = (0..workers).map(|_| Vec::new()).collect();
    for seat in seats {
        let w = seat.index % workers;
        shares[w].push(seat);
    }
    let control = Control::bind(&config.control, fabric.name(), epoch, snapshots.clone())?;
    log::info!(
        "ib-backend: provider {}, epoch {epoch:#x}, {} guests on {workers} worker(s), control {}",
        fabric.name(),
        config.guests.len(),
        config.control.display()
    );
    let mut handles = Vec::new();
    for (i, share) in shares.into_iter().enumerate() {
        let worker = Worker {
            seats: share,
            fabric: fabric.clone(),
            mtu,
            stop: stop.clone(),
            snapshots: snapshots.clone(),
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    while !stop.load(Ordering::Relaxed) {
        control.serve_pending();
        std::thread::sleep(Duration::from_millis(50));
        if handles.iter().any(|h| h.is_finished()) {
            log::error!("a worker stopped unexpectedly; shutting down");
            stop.store(true, Ordering::Relaxed);
        }
    }
    log::info!("ib-backend: shutting down");
    for h in handles {
        let _ = h.join();
    }
    let _ = std::fs::remove_file(&config.control);
    Ok(())
}
