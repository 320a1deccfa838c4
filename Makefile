# CampaignMesh — `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

ROOT := $(CURDIR)
BIN := $(ROOT)/bin
export PATH := $(BIN):$(PATH)
export GOBIN := $(BIN)

# Pinned tool versions (go install into ./bin on first use).
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION := v2.33.0
STATICCHECK_VERSION := v0.8.2
GRPCURL_VERSION := v1.9.4
# stripe-mock answers Stripe's API from its OpenAPI spec: the billing client's request shapes
# are tested against it (services/billing/stripe).
STRIPE_MOCK_VERSION := v0.203.0

# google/api protos are not ours: Debian's grpc-gateway dev package ships them (pinned by the
# distribution release); scripts/protodeps.sh installs it when missing.
GOOGLEAPIS := /usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis

TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2

$(BIN)/buf:
	go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/protoc-gen-grpc-gateway:
	go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
$(BIN)/protoc-gen-openapiv2:
	go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
$(BIN)/staticcheck:
	go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(BIN)/grpcurl:
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(BIN)/stripe-mock:
	go install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)

tools: $(TOOLS) $(BIN)/staticcheck $(BIN)/grpcurl $(BIN)/stripe-mock ## Install pinned dev tools into ./bin
.PHONY: tools

$(ROOT)/.cache/googleapis/google/api/annotations.proto:
	@test -f $(GOOGLEAPIS)/google/api/annotations.proto || scripts/apt-install.sh golang-github-grpc-ecosystem-grpc-gateway-dev
	mkdir -p $(ROOT)/.cache/googleapis/google/api
	cp $(GOOGLEAPIS)/google/api/annotations.proto $(GOOGLEAPIS)/google/api/http.proto $(ROOT)/.cache/googleapis/google/api/

protodeps: $(ROOT)/.cache/googleapis/google/api/annotations.proto
.PHONY: protodeps

MESH_SERVICES := auth,ingest,analytics,campaigns,dsr,delivery,billing,gateway

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
.PHONY: help

generate: $(TOOLS) protodeps ## Regenerate gen/ (Go, gRPC, grpc-gateway, OpenAPI) from proto/
	rm -rf gen/campaignmesh gen/openapi/*.json
	buf format -w proto
	buf generate proto
	cd gen && go mod tidy
.PHONY: generate

generate-check: generate ## Fail when the committed gen/ differs from a fresh generation
	@if [ -n "$$(git status --porcelain -- gen proto)" ]; then \
	  git status --short -- gen proto; git --no-pager diff --stat -- gen proto; \
	  echo "generate-check: generated code is stale; run 'make generate' and commit" >&2; exit 1; \
	fi
	@echo "generate-check: gen/ is up to date"
.PHONY: generate-check

lint: $(TOOLS) $(BIN)/staticcheck protodeps ## buf lint + format check, gofmt, go vet, staticcheck, compose validation
	buf lint proto
	buf format -d --exit-code proto
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); echo "gofmt needed" >&2; exit 1; }
	go vet ./... ./gen/...
	staticcheck ./...
	cd deploy && go vet ./... && staticcheck ./...
	scripts/apt-install.sh docker-compose
	docker-compose -f deploy/compose.yaml config -q
.PHONY: lint

build: ## Build the services, the gateway, cmesh, devcerts and the provider stand-ins into ./bin
	@mkdir -p $(BIN)
	go build -o $(BIN)/auth ./services/auth/cmd/auth
	go build -o $(BIN)/ingest ./services/ingest/cmd/ingest
	go build -o $(BIN)/analytics ./services/analytics/cmd/analytics
	go build -o $(BIN)/campaigns ./services/campaigns/cmd/campaigns
	go build -o $(BIN)/dsr ./services/dsr/cmd/dsr
	go build -o $(BIN)/delivery ./services/delivery/cmd/delivery
	go build -o $(BIN)/billing ./services/billing/cmd/billing
	go build -o $(BIN)/gateway ./gateway/cmd/gateway
	go build -o $(BIN)/cmesh ./cmd/cmesh
	go build -o $(BIN)/devcerts ./cmd/devcerts
	go build -o $(BIN)/standin ./cmd/standin
.PHONY: build

certs: ## Generate the dev CA and certificates into .state/certs (only what is missing)
	go run ./cmd/devcerts -dir .state/certs -services $(MESH_SERVICES)
.PHONY: certs

# SHARDS: the ClickHouse servers infra runs as the shards of cluster cm_analytics (and make run's
# analytics writers, one per shard). Every target but `make run SHARDS=N` runs one.
SHARDS ?= 1

infra: ## Install (apt) and start PostgreSQL, ClickHouse and NATS JetStream under .state/ (SHARDS=2: two ClickHouse servers as two shards)
	CM_DEV_CH_SHARDS=$(SHARDS) scripts/devenv.sh up
.PHONY: infra

run: infra certs build $(BIN)/grpcurl ## Install and start the infrastructure, make certificates, build, and bring the whole mesh up in the foreground (Ctrl-C stops it); SHARDS=2: two ClickHouse shards and two analytics writers
	scripts/run.sh up
.PHONY: run

stop: ## Stop the services and the infrastructure started by make run / make test
	scripts/run.sh stop
	scripts/devenv.sh down
.PHONY: stop

TEST_FLAGS ?= -race -count=1 -timeout 10m
test: infra check-alerts browser-deps $(BIN)/stripe-mock ## Run every test against real PostgreSQL, ClickHouse and NATS (starting them if needed), the console's browser test in Debian's Chromium among them
	set -a; . .state/env; set +a; go test $(TEST_FLAGS) ./...
	cd deploy && go test $(TEST_FLAGS) ./...
.PHONY: test

screenshots: infra browser-deps ## Refresh the console's screenshots in docs/console (the README's) by running the console's tests with the browser
	set -a; . .state/env; set +a; CM_UPDATE_SCREENSHOTS=1 go test -count=1 -run '^TestConsole$$' ./e2e/
.PHONY: screenshots

browser-deps: ## Install what the console's browser test needs when missing: Debian's Chromium (and Node.js), and npm ci of e2e/console (playwright-core, pinned by its lock file)
	scripts/browser.sh
.PHONY: browser-deps

check-alerts: ## Check the Prometheus alert rules and run their unit tests (promtool from Debian's prometheus package, extracted into ./bin)
	scripts/promtool.sh
	promtool check rules deploy/observability/alerts/*.yaml
	promtool test rules deploy/observability/alerts/tests/*.yaml
.PHONY: check-alerts

FUZZTIME ?= 10s
fuzz: ## Run each fuzz target for FUZZTIME (default 10s)
	go test -run '^$$' -fuzz '^FuzzPrepare$$' -fuzztime $(FUZZTIME) ./services/ingest
	go test -run '^$$' -fuzz '^FuzzDecodeAndPrepare$$' -fuzztime $(FUZZTIME) ./services/ingest
	go test -run '^$$' -fuzz '^FuzzRESTSurface$$' -fuzztime $(FUZZTIME) ./gateway
	go test -run '^$$' -fuzz '^FuzzSegmentPayload$$' -fuzztime $(FUZZTIME) ./gateway
	go test -run '^$$' -fuzz '^FuzzVerifyEvent$$' -fuzztime $(FUZZTIME) ./services/billing/stripe
	go test -run '^$$' -fuzz '^FuzzSegmentDecodeMatchesEncodingJSON$$' -fuzztime $(FUZZTIME) ./gateway
.PHONY: fuzz

bench-ingest: infra ## Measure the event pipeline against its baselines (REST, Segment route), landing with 1 and 2 writers (about 5 min; results in .state/bench-ingest.json)
	go build -o $(BIN)/bench-ingest ./cmd/bench-ingest
	set -a; . .state/env; set +a; $(BIN)/bench-ingest $(BENCH_FLAGS)
.PHONY: bench-ingest

bench-analytics: infra ## Load 10M synthetic events and time each analytics query via RPC and direct SQL, plus freshness (about 5 min; results in .state/bench-analytics.json)
	go build -o $(BIN)/bench-analytics ./cmd/bench-analytics
	set -a; . .state/env; set +a; $(BIN)/bench-analytics $(BENCH_FLAGS)
.PHONY: bench-analytics

bench-dsr: infra ## Time data-subject requests on the 10M-event data set, services as processes over mTLS: one erasure, 1,000 at once (ClickHouse mutations), a 100,000-event export and dsr's peak memory, ingest with 100,000 suppressions and PII rules (about 4 min, plus about 1 to load the data set unless BENCH_FLAGS=-keep finds it; results in .state/bench-dsr.json)
	go build -o $(BIN)/bench-dsr ./cmd/bench-dsr
	set -a; . .state/env; set +a; $(BIN)/bench-dsr $(BENCH_FLAGS)
.PHONY: bench-dsr

bench-delivery: infra ## Send one email campaign to 100,000 contacts on the real mesh through the SendGrid stand-in: messages per second and time from activation to the first message (CM_BENCH_RECIPIENTS, CM_BENCH_CONCURRENCY; a few minutes)
	set -a; . .state/env; set +a; go test -run '^$$' -bench '^BenchmarkDeliveryCampaign$$' -benchtime 1x -timeout 40m -v ./e2e/
.PHONY: bench-delivery

chaos: infra ## Long fault test (analytics from its chaos build, -tags chaos): kill -9 writer and ingest, ClickHouse outages, under load (CHAOS_DURATION, default 3m; outages double up to CHAOS_MAX_OUTAGE, default 1m); prints acked/found/lost/duplicated
	set -a; . .state/env; set +a; CHAOS_DURATION=$${CHAOS_DURATION:-3m} go test -count=1 -timeout 30m -run TestNoAckedEventIsLostOrDuplicatedUnderFaults -v ./e2e | grep -E '^(chaos:|--- |ok|FAIL)|fault_test'
.PHONY: chaos

clean: stop ## Stop everything and delete ./bin, .state/ and .cache/
	rm -rf $(BIN) .state .cache
.PHONY: clean
