# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test lint fmt bench clean-test-dbs dev-idp browser-deps deny fuzz

## run: build and start api-server, remote-proxy, a demo service and a demo agent
run: dev-idp
	@deploy/dev/run.sh

## test: every test (PostgreSQL ones when EDGELINK_TEST_POSTGRES_URL is set)
test: clean-test-dbs dev-idp browser-deps
	@if [ -z "$$EDGELINK_TEST_POSTGRES_URL" ]; then \
	  echo "!!! EDGELINK_TEST_POSTGRES_URL is not set: PostgreSQL tests are SKIPPED (SQLite only)." >&2; \
	  echo "!!! Set it, e.g. EDGELINK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test make test" >&2; \
	else echo "PostgreSQL tests run against $$EDGELINK_TEST_POSTGRES_URL" >&2; fi
	@# The binaries' tests (tests/tests/cli) run the real executables; building
	@# all targets builds them with the same features the tests use.
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --all-targets

## lint: formatting and clippy as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## fuzz: every fuzz target for FUZZ_SECONDS each (cargo fuzz; stable toolchain via RUSTC_BOOTSTRAP)
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR ?= /var/tmp/edgelink-fuzz-target
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	@mkdir -p $(FUZZ_TARGET_DIR)
	@cd fuzz && for t in $${FUZZ_TARGETS:-$$(cargo fuzz list)}; do \
	  mkdir -p corpus/$$t; \
	  log=$(FUZZ_TARGET_DIR)/$$t.log; \
	  echo "== $$t: $(FUZZ_SECONDS) s (log $$log)"; \
	  if ! RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo fuzz run --sanitizer none $$t \
	      corpus/$$t $$( [ -d seeds/$$t ] && echo seeds/$$t ) -- \
	      -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 >$$log 2>&1; then \
	    tail -40 $$log; echo "!!! $$t failed: the crashing input is under fuzz/artifacts/$$t/" >&2; exit 1; \
	  fi; \
	  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*(DONE|cov:))" $$log | tail -3; \
	done

## deny: advisories (RustSec), licences, banned duplicate versions, sources (deny.toml)
# The RustSec database is a git clone where deny.toml expects it; without
# internet it is cloned from ADVISORY_DB_SOURCE (a local mirror).
ADVISORY_DB := /var/tmp/edgelink-advisory-db/advisory-db-3157b0e258782691
ADVISORY_DB_SOURCE ?= $(firstword $(wildcard /work/.mirror/rustsec+advisory-db/repo) https://github.com/rustsec/advisory-db)
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	@if [ -d $(ADVISORY_DB)/.git ]; then git -C $(ADVISORY_DB) pull -q --ff-only 2>/dev/null || true; \
	else git clone -q $(ADVISORY_DB_SOURCE) $(ADVISORY_DB) 2>/dev/null || true; fi
	$(CARGO) fetch -q
	@if [ -d $(ADVISORY_DB)/.git ]; then \
	  $(CARGO) deny --offline check; \
	else \
	  echo "!!! no RustSec database ($(ADVISORY_DB_SOURCE) unreachable): advisories are SKIPPED" >&2; \
	  $(CARGO) deny --offline check bans licenses sources; \
	fi

## bench: edgelink's relay path next to direct, rathole and bore (docs/benchmarks.md)
bench:
	@bench/run.sh

## dev-idp: install the development OpenID provider's npm packages (pinned by its lockfile)
DEV_IDP_STAMP := deploy/dev-idp/node_modules/.package-lock.json
dev-idp: $(DEV_IDP_STAMP)
$(DEV_IDP_STAMP): deploy/dev-idp/package.json deploy/dev-idp/package-lock.json
	cd deploy/dev-idp && npm ci --no-audit --no-fund

## browser-deps: playwright-core for the real-browser UI tests (the browser is Debian's chromium) and socket.io-client for seed 001's JavaScript intermediary
BROWSER_STAMP := tests/browser/node_modules/.package-lock.json
browser-deps: $(BROWSER_STAMP)
	@[ -x /usr/bin/chromium ] || echo "!!! /usr/bin/chromium is missing: the real-browser UI test is SKIPPED (apt-get install chromium)" >&2
$(BROWSER_STAMP): tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund

# Drops per-test PostgreSQL databases left behind by earlier runs.
clean-test-dbs:
	@if [ -n "$$EDGELINK_TEST_POSTGRES_URL" ] && command -v psql >/dev/null; then \
	  for db in $$(psql "$$EDGELINK_TEST_POSTGRES_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'edgelink\_t\_%'" 2>/dev/null); do \
	    psql "$$EDGELINK_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $$db" >/dev/null 2>&1 || true; \
	  done; \
	fi
