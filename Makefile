# ibguest: the two commands a newcomer needs are `make test` and (later)
# `make run`. Every target installs what it needs first, idempotently.

CARGO ?= cargo
NOSTD_TARGET := x86_64-unknown-none
NOSTD_CRATES := -p ring -p verbs-shim -p ipoib -p xen-proto
FUZZ_SECONDS ?= 60
# Executions per target for `make fuzz-long`.
FUZZ_LONG_RUNS ?= 10000000

.PHONY: all deps build nostd image run test unit loom lint fmt bench bench-vm fuzz fuzz-long soak example softroce xen-test xen-rdma-test xen-stress clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --workspace --all-targets
	$(MAKE) --no-print-directory nostd

# The bootable PVH image: target/x86_64-unknown-none/release/guest
image: deps
	$(CARGO) build -p guest --target $(NOSTD_TARGET) --release
	@echo "image: target/$(NOSTD_TARGET)/release/guest"

# The back end and two guests under QEMU (and a gateway to Linux as root).
run: deps
	scripts/run.sh

# The no_std crates must build for bare metal (cfg(test) hides mistakes).
nostd: deps
	$(CARGO) build $(NOSTD_CRATES) -p netcore --target $(NOSTD_TARGET)
	$(CARGO) build -p guest --target $(NOSTD_TARGET) --release

test: deps lint nostd unit loom softroce xen-test
	@echo "make test: all checks passed"

unit: deps
	$(CARGO) test --workspace

# The loom model of publish/notify on the ring (its own target dir, since
# --cfg loom rebuilds everything).
loom: deps
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p ring --test loom --release

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p verbs-shim --no-default-features --all-targets -- -D warnings
	$(CARGO) clippy -p guest --target $(NOSTD_TARGET) -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: deps
	$(CARGO) run --release -p ibguest-bench

# Two ibguest unikernels on ib-backend (sim) against two Linux VMs with
# virtio-net, all under QEMU TCG: TCP MB/s and UDP RR median/p99 as ratios
# (a few minutes; not part of `make test`). See benchvm/README.md.
bench-vm: deps
	benchvm/bench-vm.sh

fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# Every target for FUZZ_LONG_RUNS executions (10^7), however long that takes
# (about 30-70 minutes per target at 2,000-5,000 exec/s on one core).
fuzz-long: deps
	FUZZ_SECONDS=0 FUZZ_RUNS=$(FUZZ_LONG_RUNS) scripts/fuzz.sh

# The long reliability runs (docs/RELIABILITY.md): SOAK_ROUNDS hostile
# guests while an honest pair moves TCP data; guests killed and reconnected
# SOAK_CYCLES times with the back end's descriptors and memory flat; and
# SOAK_TCP_MIB MiB of TCP through 10% of every wire fault.
SOAK_ROUNDS ?= 100000
SOAK_CYCLES ?= 1000
SOAK_TCP_MIB ?= 1024
soak: deps
	$(CARGO) build --workspace --bins
	SOAK_ROUNDS=$(SOAK_ROUNDS) $(CARGO) test --release -p ibguest-testkit --test hostile_soak -- --ignored --nocapture
	SOAK_CYCLES=$(SOAK_CYCLES) $(CARGO) test -p qemu-tests --test reconnect_soak -- --ignored --nocapture
	SOAK_TCP_MIB=$(SOAK_TCP_MIB) $(CARGO) test --release -p ibguest-testkit --test lossy_soak -- --ignored --nocapture

# Two stacks (ARP, ping, TCP) on the sim fabric, writing two-stacks.pcap.
example: deps
	$(CARGO) run --release -p ibguest-testkit --example two_stacks -- two-stacks.pcap
	tshark -r two-stacks.pcap | head -20

# The rdma provider, ib-backend, hosted guests and the unikernel on soft-RoCE
# (rxe0) inside QEMU VMs built from Debian packages; see softroce/README.md.
softroce: deps
	softroce/softroce.sh

# Xen 4.17 inside QEMU (TCG) with a Debian dom0: ib-backend and two ibguest
# PVH domains on the Xen transport; see xentest/README.md.
xen-test: deps
	xentest/xen-test.sh

# The same with ib-backend on the rdma provider: soft-RoCE (rxe0) on a
# virtio-net NIC in dom0; see xentest/scenario-rdma.sh.
xen-rdma-test: deps
	XEN_TEST_RDMA=1 xentest/xen-test.sh

# A recreate stress for the Xen transport (not part of make test): one
# ibguest domain created and destroyed STRESS_N times (default 30) next to
# a running one; see xentest/scenario-recreate.sh.
xen-stress: deps
	XEN_TEST_SCENARIO=xentest/scenario-recreate.sh XEN_TEST_ATTEMPTS=1 XEN_TEST_TIMEOUT=$${XEN_TEST_TIMEOUT:-1200} xentest/xen-test.sh

clean:
	$(CARGO) clean
