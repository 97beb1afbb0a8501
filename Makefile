# smime-agent: the two commands of the README, and a few helpers.
#
#   make demo   the agent's main job end to end on a SoftHSM token it creates
#   make test   every test (unit, integration with SoftHSM and the virtual card, peers, the
#               Debian package installed and removed; the soak for 30 s)
#   make soak   the soak for SOAK_SECS (default 600): 64 clients while the card is pulled,
#               pcscd restarted and the log disk fills; its counts in target/soak-report.md

CARGO ?= cargo

.PHONY: all deps build demo test test-package deb lint fmt schema bench build-cost audit fuzz fuzz-smoke soak clean

all: build

deps:
	@./softhsm-setup/deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

demo: deps
	$(CARGO) build --bin smime-agent
	$(CARGO) build -p smime-agent-pkcs11
	./softhsm-setup/demo.sh

test: build
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) test-package

# The Debian package (target/debian/): release binaries, module, units, man pages, completions.
deb: deps
	$(CARGO) build --release --bin smime-agent
	$(CARGO) build --release -p smime-agent-pkcs11
	./contrib/debian/assets.sh
	cargo-deb --no-build --strip

# Installs the package on this machine, uses it, and purges it (tests/package.sh).
test-package: deb
	./tests/package.sh

# Benchmarks (release build; a few minutes): bench/REPORT.md and bench/report.json.
bench: deps
	$(CARGO) build --release -p smime-agent-pkcs11
	$(CARGO) bench --bench agent

# The dependencies' cost (clean release build time, crates, binary size) into bench/BUILD.md.
build-cost:
	./bench/build-cost.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cargo-deny check licenses bans sources

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, stable Rust): every target FUZZ_SECONDS
# (default 300) from the committed seeds; fuzz-smoke is CI's short version.
FUZZ_SECONDS ?= 300
fuzz: deps
	./fuzz/run.sh $(FUZZ_SECONDS)

fuzz-smoke: deps
	./fuzz/run.sh 8

# The soak (tests/soak.rs) for SOAK_SECS seconds; `make test` runs it for 30 s.
# SOAK_CARD_CHAOS=wild pulls the card and kills pcscd under running card operations
# (OpenSC 0.23 hangs or crashes there: see README, Reliability).
SOAK_SECS ?= 600
soak: deps
	SOAK_SECS=$(SOAK_SECS) SOAK_REPORT=$(CURDIR)/target/soak-report.md \
		$(CARGO) test --test soak -- --nocapture
	@cat target/soak-report.md

# Known vulnerabilities (RustSec): needs the advisory database from the network.
audit: deps
	cargo-deny check advisories

fmt:
	$(CARGO) fmt --all

schema:
	$(CARGO) run -p smime-agent-proto --example gen-schema

clean:
	$(CARGO) clean
	rm -rf demo-work
