# meshcast: the two commands are `make run` and `make test`.
GO ?= go
PKGS := ./...
# Tests that run with the machine to themselves (see test).
ALONE := github.com/meshcast/meshcast/test/e2e/deploy
# Let go.mod's toolchain line (a patched Go release) apply even where the
# installed Go defaults to GOTOOLCHAIN=local; a newer installed Go is used as is.
export GOTOOLCHAIN ?= auto
# The version the binary reports: git describe of the checkout, else empty
# (the binary then reads the revision Go recorded).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS := -X github.com/meshcast/meshcast/internal/buildinfo.Version=$(VERSION)

.PHONY: run test build image web vet fuzz bench deps vulncheck soak

## run: build the web dashboard and run a complete single node (RTMP :1935,
## HTTP :8080, the dashboard at http://localhost:8080/)
run: web
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/meshcast serve

## build: build bin/meshcast, its web dashboard embedded
build: web
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/meshcast ./cmd/meshcast

## image: build the container image meshcast:VERSION (and :latest)
image:
	docker build --build-arg VERSION="$(VERSION)" -t meshcast:$(or $(VERSION),dev) -t meshcast:latest .

## web: build the web dashboard (web/ -> internal/web/dist, embedded by go
## build); npm ci first when node_modules is missing or older than the lock file
web:
	@if [ ! -e node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund; fi
	npm run build --silent

## deps: install what the tests need (ffmpeg, GStreamer) when missing
deps:
	bash scripts/install-test-deps.sh

## test: install test dependencies, then vet (for Linux, macOS and Windows)
## and run every test with the race detector
test: deps web
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt: these files need formatting:"; gofmt -l .; exit 1; }
	$(GO) mod tidy -diff
	$(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)
	GOOS=windows $(GO) vet $(PKGS)
	bash scripts/vulncheck.sh
	@# The rolling upgrade's players hold HLS stalls and HTTP-FLV
	@# reconnections to 2 s: its package runs after the others, alone,
	@# so that their processes do not share its cores.
	@status=0; \
	GO=$(GO) bash scripts/gotest.sh -race -count=1 -timeout 20m $$($(GO) list $(PKGS) | grep -v -x '$(ALONE)') || status=1; \
	GO=$(GO) bash scripts/gotest.sh -race -count=1 -timeout 20m $(ALONE) || status=1; \
	exit $$status
	$(MAKE) chart-test

## chart-test: the Helm chart (deploy/helm/meshcast), tested without a
## cluster by the Go module deploy/charttest, whose Helm and Kubernetes
## dependencies the meshcast binary never carries
chart-test:
	cd deploy/charttest && $(GO) mod tidy -diff
	cd deploy/charttest && $(GO) vet ./...
	cd deploy/charttest && $(GO) test -count=1 -timeout 10m ./...

## soak: the 30-minute soak of one node (RELIABILITY.md#soak): publishers
## restarting, 10,000 viewer cycles over six protocols, transcoding; the
## server's goroutines, files, ffmpeg children and heap back at their baseline
soak:
	MESHCAST_LONG_TESTS=1 $(GO) test -count=1 -v -run TestSoak -timeout 45m ./test/e2e/soak

## vulncheck: govulncheck against the Go vulnerability database
vulncheck:
	bash scripts/vulncheck.sh

## fuzz: run every fuzz target in the module for FUZZTIME each (default 30s)
## and print each one's executions; fails if any target finds a crash
FUZZTIME ?= 30s
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

## bench: the fan-out benchmark recorded in BENCHMARKS.md
bench:
	$(GO) test -run=NONE -bench=Fanout -benchmem ./internal/stream/
