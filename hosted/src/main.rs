//! `ibguest-hosted`: a guest's network core as a Linux process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ibguest_hosted::{HostedError, Runtime};
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address, Ipv4Cidr};

#[derive(Parser)]
#[command(
    name = "ibguest-hosted",
    version,
    about = "An ibguest guest as a Linux process, attached to ib-backend"
)]
struct Cli {
    /// The back end's socket for this guest (what QEMU's -chardev socket,path= names).
    #[arg(long)]
    socket: PathBuf,
    /// This guest's address, e.g. 10.77.0.2/24.
    #[arg(long, value_parser = parse_cidr)]
    ip: Ipv4Cidr,
    /// Default gateway.
    #[arg(long)]
    gw: Option<Ipv4Address>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGTERM (the default).
    Serve,
    /// Ping an address; exit 0 if every echo is answered.
    Ping {
        target: Ipv4Address,
        #[arg(long, default_value_t = 3)]
        count: u16,
        /// Seconds to wait for each reply.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

/// Parses `10.77.0.2/24`.
fn parse_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not ADDRESS/PREFIX (e.g. 10.77.0.2/24)"))?;
    let addr: Ipv4Address = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("{prefix:?} is not a prefix length (1-32)"))?;
    Ok(Ipv4Cidr::new(addr, prefix))
}

fn serve(rt: &mut Runtime, stop: &AtomicBool) -> Result<(), HostedError> {
    while !stop.load(Ordering::Relaxed) {
        if !rt.poll()? {
            rt.idle_wait()?;
        }
    }
    Ok(())
}

fn ping(
    rt: &mut Runtime,
    target: Ipv4Address,
    count: u16,
    timeout: Duration,
) -> Result<bool, HostedError> {
    let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
    let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
    let mut socket = icmp::Socket::new(rx, tx);
    let ident = std::process::id() as u16;
    socket
        .bind(icmp::Endpoint::Ident(ident))
        .map_err(|e| HostedError::Protocol(format!("icmp bind: {e}")))?;
    let handle = rt.sockets.add(socket);
    let mut answered = 0;
    for seq in 1..=count {
        let payload = [0x5au8; 56];
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no: seq,
            data: &payload,
        };
        {
            let s = rt.sockets.get_mut::<icmp::Socket>(handle);
            let buf = s
                .send(repr.buffer_len(), IpAddress::Ipv4(target))
                .map_err(|e| HostedError::Protocol(format!("icmp send: {e}")))?;
            repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &Default::default());
        }
        let sent = Instant::now();
        let mut got = false;
        while !got && sent.elapsed() < timeout {
            if !rt.poll()? {
                rt.idle_wait()?;
            }
            let s = rt.sockets.get_mut::<icmp::Socket>(handle);
            while let Ok((data, _)) = s.recv() {
                if let Ok(p) = Icmpv4Packet::new_checked(data) {
                    if let Ok(Icmpv4Repr::EchoReply { seq_no, .. }) =
                        Icmpv4Repr::parse(&p, &Default::default())
                    {
                        got |= seq_no == seq;
                    }
                }
            }
        }
        if got {
            answered += 1;
            println!(
                "reply from {target}: seq={seq} time={:.3} ms",
                sent.elapsed().as_secs_f64() * 1e3
            );
        } else {
            println!("no reply from {target}: seq={seq}");
        }
    }
    println!("{count} sent, {answered} answered");
    Ok(answered == count)
}

fn run(cli: Cli, stop: &AtomicBool) -> Result<bool, HostedError> {
    let mut rt = Runtime::start(&cli.socket, cli.ip, cli.gw)?;
    log::info!("ibguest-hosted: {} up, hw {}", cli.ip, rt.device.hw_addr());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&mut rt, stop).map(|()| true),
        Command::Ping {
            target,
            count,
            timeout,
        } => ping(&mut rt, target, count, Duration::from_secs(timeout)),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ibguest-hosted: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(cli, &stop) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ibguest-hosted: {e}");
            ExitCode::from(3)
        }
    }
}
