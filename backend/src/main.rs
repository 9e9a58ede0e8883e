//! `ib-backend`: serves guests' shared-memory channels over ivshmem-doorbell
//! (QEMU) or Xen grants and event channels (dom0), on a sim or rdma fabric.
//!
//! `unsafe` code is denied except in the modules that need it: descriptor
//! passing (`handoff`), the rdma completion descriptor (`provider`), the
//! TAP ioctl (`gateway::tap`) and the gntdev/evtchn ioctls and mappings
//! (`transport::xen::sys`).
#![deny(unsafe_code)]

mod capture;
mod config;
mod control;
mod daemon;
mod dhcp;
mod gateway;
#[allow(unsafe_code)]
mod handoff;
#[cfg(test)]
mod hardening_tests;
mod limits;
mod listen;
mod port_security;
#[allow(unsafe_code)]
mod provider;
mod seat;
mod stats;
mod supervisor;
mod transport;
mod worker;
mod xen;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "ib-backend",
    version,
    about = "Serves ibguest guests over ivshmem-doorbell or Xen on a sim or rdma fabric"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the back end until SIGTERM.
    Run(RunArgs),
    /// Print the counters of a running back end.
    Stats {
        /// The control socket of the running back end.
        #[arg(long, default_value = config::DEFAULT_CONTROL)]
        control: PathBuf,
    },
    /// Check a configuration file and print what it configures.
    CheckConfig { file: PathBuf },
    /// Internal: the worker process the supervisor starts.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        handoff_fd: i32,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args)]
struct RunArgs {
    /// TOML configuration file; flags override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// "sim" (the embedded software fabric) or "rdma" (libibverbs).
    #[arg(long)]
    provider: Option<String>,
    /// IB MTU in bytes: 256, 512, 1024, 2048 or 4096.
    #[arg(long)]
    mtu: Option<usize>,
    /// Control socket for `ib-backend stats`.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Capture all fabric traffic to this file (LINKTYPE_IPOIB).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Worker threads (default: one per core; with busy polling on, one per
    /// two cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Busy polling: microseconds a worker keeps polling its guests' rings
    /// after the last real work before it sleeps (0: off, at most 10000;
    /// default 50). An idle back end does not spin.
    #[arg(long, allow_negative_numbers = true)]
    busy_poll_us: Option<i64>,
    /// RDMA device name, e.g. rxe0 or mlx5_0.
    #[arg(long)]
    rdma_device: Option<String>,
    /// RDMA port number.
    #[arg(long)]
    rdma_port: Option<u8>,
    /// RDMA GID index (1 is the RoCEv2 IPv4 GID on rxe).
    #[arg(long)]
    rdma_gid_index: Option<u8>,
    /// TAP=ADDRESS/PREFIX: route the fabric to Linux through a TAP.
    #[arg(long)]
    gateway: Option<String>,
    /// ADDRESS/PREFIX[,lease=SECS]: a DHCP server at ADDRESS that hands
    /// each seat its ip= (RFC 4390, for guests with ip=dhcp).
    #[arg(long)]
    dhcp: Option<String>,
    /// A guest: name=g1,socket=/path[,window=8M][,pkey=0xffff][,ip=10.77.0.2] (QEMU), or
    /// name=g1,xen-domain=NAME[,...] (the Xen domain called NAME). Repeat for more.
    #[arg(long = "guest")]
    guests: Vec<String>,
    /// Xen seats: the xenstore to use (default /run/xenstored/socket, else /dev/xen/xenbus).
    #[arg(long)]
    xenstore: Option<PathBuf>,
    /// The group that may connect to the guest and control sockets (mode
    /// 0660); without it they are owner-only (0600).
    #[arg(long)]
    socket_group: Option<String>,
}

/// Builds the configuration from `run`'s arguments, or exits with code 2 and
/// a message that says what to fix.
fn load_config(args: RunArgs) -> Result<Config, ExitCode> {
    let overrides = Overrides {
        provider: args.provider,
        mtu: args.mtu,
        control: args.control,
        pcap: args.pcap,
        workers: args.workers,
        busy_poll_us: args.busy_poll_us,
        rdma_device: args.rdma_device,
        rdma_port: args.rdma_port,
        rdma_gid_index: args.rdma_gid_index,
        gateway: args.gateway,
        xenstore: args.xenstore,
        dhcp: args.dhcp,
        guests: args.guests,
        socket_group: args.socket_group,
    };
    let config = Config::load(args.config.as_deref(), &overrides).map_err(|e| {
        eprintln!("ib-backend: configuration error: {e}");
        ExitCode::from(2)
    })?;
    if config.guests.is_empty() {
        eprintln!(
            "ib-backend: configuration error: no guests (add [[guest]] to the file or --guest name=g1,socket=/tmp/g1.sock or --guest name=g1,xen-domain=NAME)"
        );
        return Err(ExitCode::from(2));
    }
    Ok(config)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Worker { handoff_fd, run } => {
            let config = match load_config(run) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let link = match handoff::inherited_link(handoff_fd) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("ib-backend worker: {e}");
                    return ExitCode::from(2);
                }
            };
            match daemon::run_worker(config, link) {
                Ok(()) => ExitCode::SUCCESS,
                Err(daemon::WorkerError::Startup(e)) => {
                    eprintln!("ib-backend: {e}");
                    ExitCode::from(supervisor::EXIT_FATAL)
                }
                Err(daemon::WorkerError::Running(e)) => {
                    eprintln!("ib-backend worker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            // The worker gets the same arguments.
            let worker_args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
            let config = match load_config(args) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match supervisor::run(config, worker_args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(supervisor::SupervisorError::Fatal(e)) => {
                    eprintln!("ib-backend: {e}");
                    ExitCode::from(supervisor::EXIT_FATAL)
                }
                Err(e) => {
                    eprintln!("ib-backend: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Stats { control } => match control::request(&control, "stats") {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ib-backend: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { file } => match Config::load(Some(&file), &Overrides::default()) {
            Ok(c) => {
                println!("{c:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ib-backend: configuration error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
