//! The guest image's main. On the host this binary only says how to build
//! the real thing.
//!
//! Boot: print the start info, parse the command line, open the channel's
//! transport (Xen grants and event channels under Xen, else ivshmem), print
//! what it found and the channel magic, then run the network (`netloop`)
//! until `exit-after` expires, or forever.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "guest: this is the ibguest unikernel; build the bootable image with\n  \
         cargo build -p guest --target x86_64-unknown-none --release\n\
         and boot target/x86_64-unknown-none/release/guest with qemu-system-x86_64 -kernel"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
guest::entry_point!(demo::main);

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod netloop;

#[cfg(target_os = "none")]
mod demo {
    use guest::arch::crash;
    use guest::config::{BootConfig, Crash};
    use guest::exit::{exit, fail, ExitCode};
    use guest::transport::Transport;
    use guest::{println, BootInfo};

    pub fn main(boot: &'static BootInfo) -> ! {
        let si = boot.start_info;
        println!(
            "ibguest: booted (hvm_start_info v{} at {:#x}, {} KiB RAM, heap {:#x}-{:#x})",
            si.version,
            si.paddr,
            si.ram_bytes() / 1024,
            boot.heap.start,
            boot.heap.end
        );
        println!("ibguest: command line: \"{}\"", si.cmdline);
        for r in &si.memmap {
            println!("ibguest:   memory {r}");
        }
        if let Some(x) = &boot.xen {
            println!(
                "ibguest: xen {}.{} (CPUID base {:#x}): event channels on vector {:#x}, PV console {}, PV clock {} (TSC {} kHz by its scale)",
                x.version.0,
                x.version.1,
                x.cpuid_base,
                guest::arch::vector::XEN_UPCALL,
                if x.console { "up" } else { "absent" },
                match x.pv_clock_ns {
                    Some(ns) => alloc::format!("at {} ms of system time", ns / 1_000_000),
                    None => alloc::string::String::from("unreadable"),
                },
                x.pv_clock_tsc_hz.unwrap_or(0) / 1000
            );
        }
        if let Some(rsdp) = si.rsdp {
            println!("ibguest: ACPI RSDP at {rsdp:#x}");
        }
        let cal = boot.calibration;
        println!(
            "ibguest: clock: TSC {} kHz, APIC timer {} kHz (from the {}); APIC {} at {:#x}",
            cal.tsc_hz / 1000,
            cal.lapic_hz / 1000,
            cal.source,
            boot.lapic_id,
            boot.lapic_base
        );

        println!("ibguest: cpu: {}", guest::arch::cpu::tables());

        let config = BootConfig::parse(&si.cmdline).unwrap_or_else(|e| {
            fail(
                ExitCode::BadCommandLine,
                format_args!("bad command line: {e}"),
            )
        });
        log::set_max_level(config.net.log);
        log::info!("config: {}", config.net);
        log::debug!("random seed {:#x}", guest::arch::cpu::random_seed());

        if let Some(c) = config.guest.crash {
            println!("ibguest: crash={} requested", c.name());
            match c {
                Crash::InvalidOpcode => crash::invalid_opcode(),
                Crash::PageFault => crash::page_fault(),
                Crash::StackOverflow => crash::stack_overflow(),
                Crash::Panic => panic!("crash=panic requested on the command line"),
            }
        }

        let (params, big) = crate::netloop::channel(&config.net);
        let window_len = ring::Layout::window_len_with(params, big).unwrap_or_else(|e| {
            fail(
                ExitCode::NetworkFailure,
                format_args!("channel layout: {e:?}"),
            )
        });
        let mut dev = Transport::open(window_len, config.guest.xen_fault)
            .unwrap_or_else(|e| fail(e.exit_code(), format_args!("{e}")));
        match &dev {
            Transport::Ivshmem(dev) => {
                println!(
                    "ibguest: ivshmem at {} IVPosition {} MSI-X {} vector(s), table in BAR{}",
                    dev.location(),
                    dev.my_id(),
                    dev.vectors(),
                    dev.msix().table_bar
                );
                for (i, bar) in dev.bars().iter().enumerate() {
                    println!("ibguest:   BAR{i}: {bar}");
                }
            }
            Transport::Xen(x) => println!(
                "ibguest: xen: channel connected to domain {}: {} pages granted, event channel {}",
                x.backend_id(),
                x.pages(),
                x.port()
            ),
        }
        let window = dev.window();
        let magic = window.load_u32(0, core::sync::atomic::Ordering::Acquire);
        match magic {
            Ok(m) => println!(
                "ibguest: channel magic {m:#010x}{}",
                if m == ring::header::MAGIC {
                    " (IBGC)"
                } else {
                    " (not the back end's: not initialised?)"
                }
            ),
            Err(e) => println!("ibguest: cannot read the channel magic: {e:?}"),
        }

        crate::netloop::run(&config, &dev);
        dev.close();
        exit(ExitCode::Success)
    }
}
