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

tools: $(TOOLS) $(BIN)/staticcheck $(BIN)/grpcurl ## Install pinned dev tools into ./bin
.PHONY: tools

$(ROOT)/.cache/googleapis/google/api/annotations.proto:
	@test -f $(GOOGLEAPIS)/google/api/annotations.proto || scripts/apt-install.sh golang-github-grpc-ecosystem-grpc-gateway-dev
	mkdir -p $(ROOT)/.cache/googleapis/google/api
	cp $(GOOGLEAPIS)/google/api/annotations.proto $(GOOGLEAPIS)/google/api/http.proto $(ROOT)/.cache/googleapis/google/api/

protodeps: $(ROOT)/.cache/googleapis/google/api/annotations.proto
.PHONY: protodeps
