# meshcast in a container: RTMP on 1935, HTTP (HTTP-FLV, HLS, API) on 8080.
#
#   docker build -t meshcast .
#   docker run -p 1935:1935 -p 8080:8080 meshcast
#
# With a certificate (serve --tls-cert FILE --tls-key FILE, mounted into the
# container), RTMPS on 1936 and HTTPS on 8443 as well.
#
# Arguments after the image name replace "serve":
#   docker run meshcast serve --redis redis://redis:6379/0 --cluster-secret ...
# A three-node cluster behind nginx: deploy/compose.yaml.

# The web dashboard (embedded in the binary) and the browser's Socket.IO
# client library, which meshcast serves at /socket.io/socket.io.js, from the
# npm lock file.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web web
RUN mkdir -p internal/web/dist && npm run build

# Build a static binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=web /web/internal/web/dist internal/web/dist
# VERSION is what "meshcast version" prints (default: from the Git checkout).
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/meshcast/meshcast/internal/buildinfo.Version=${VERSION}" \
	-o /out/meshcast ./cmd/meshcast

# Run it on a minimal image without a shell or package manager, as a user
# without privileges (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/meshcast /usr/local/bin/meshcast
COPY --from=web /web/node_modules/socket.io-client/dist /usr/share/meshcast/node_modules/socket.io-client/dist
ENV MESHCAST_WEB_MODULES=/usr/share/meshcast/node_modules
USER nonroot:nonroot
EXPOSE 1935 8080 1936 8443 8890/udp 8189/udp
# SIGTERM (docker stop) drains the node for --drain-grace (30 s) before it
# exits: give it that long (docker stop -t 45, or stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["meshcast"]
CMD ["serve"]
