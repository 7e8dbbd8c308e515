# meshcast in a container: RTMP on 1935, HTTP (HTTP-FLV, HLS, API, the
# dashboard) on 8080, SRT on 8890/udp and WebRTC media on 8189/udp, with
# Debian's ffmpeg for transcoding and WebRTC audio.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t meshcast .
#   docker run -p 1935:1935 -p 8080:8080 -p 8890:8890/udp -p 8189:8189/udp \
#     -e MESHCAST_PUBLISH_TRUSTED_NETWORKS=172.16.0.0/12 meshcast
#
# (make image does the same.) A publisher on the Docker host reaches the
# container from the bridge network's gateway, not from loopback: the
# default publish policy (--publish-auth loopback) wants a key from it
# unless --publish-trusted-networks (MESHCAST_PUBLISH_TRUSTED_NETWORKS)
# lists that network, as above. WebRTC clients elsewhere need the host's
# address: -e MESHCAST_WEBRTC_NAT_IPS=HOST_IP.
#
# Recordings go to /var/lib/meshcast/recordings and on-demand files are
# read from /var/lib/meshcast/vod: mount volumes there. With a certificate
# (serve --tls-cert FILE --tls-key FILE, mounted into the container), RTMPS
# on 1936 and HTTPS on 8443 as well.
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

# Run it on Debian with its ffmpeg (transcoding, WebRTC audio, snapshots),
# as a user without privileges.
FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ffmpeg ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --uid 65532 --home-dir /var/lib/meshcast --create-home meshcast \
	&& mkdir -p /var/lib/meshcast/recordings /var/lib/meshcast/vod \
	&& chown -R meshcast:meshcast /var/lib/meshcast
COPY --from=build /out/meshcast /usr/local/bin/meshcast
COPY --from=web /web/node_modules/socket.io-client/dist /usr/share/meshcast/node_modules/socket.io-client/dist
ENV MESHCAST_WEB_MODULES=/usr/share/meshcast/node_modules \
	MESHCAST_RECORD_DIR=/var/lib/meshcast/recordings \
	MESHCAST_VOD_DIR=/var/lib/meshcast/vod
WORKDIR /var/lib/meshcast
VOLUME ["/var/lib/meshcast/recordings", "/var/lib/meshcast/vod"]
USER meshcast:meshcast
EXPOSE 1935 8080 1936 8443 8890/udp 8189/udp 8554
# SIGTERM (docker stop) drains the node for --drain-grace (30 s) before it
# exits: give it that long (docker stop -t 45, or stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["meshcast"]
CMD ["serve"]
