package app

import (
	"context"
	"net"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/server/rtsp"
	"github.com/meshcast/meshcast/internal/source"
	"github.com/meshcast/meshcast/internal/streamname"
)

// newRTSP builds the RTSP and RTSPS endpoint of cfg, or none when neither
// listens (RTSPS needs the node's certificate). Start opens it.
func (a *App) newRTSP(cfg config.Config, az auth.Authorizer) {
	if cfg.RTSPAddr == "" && (a.tlsCfg == nil || cfg.RTSPSAddr == "") {
		return
	}
	rc := rtsp.Config{Addr: cfg.RTSPAddr, ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxConnections: cfg.MaxConnections,
		MaxConnectionsPerIP: cfg.MaxConnectionsPerIP, Auth: az, FFmpeg: cfg.FFmpeg, Logger: a.log}
	if cfg.RTSPAddr != "" {
		rc.UDPRTPAddr, rc.UDPRTCPAddr = cfg.RTSPUDPRTPAddr, cfg.RTSPUDPRTCPAddr
	}
	if a.tlsCfg != nil {
		rc.RTSPSAddr, rc.TLSConfig = cfg.RTSPSAddr, a.tlsCfg
	}
	a.rtsp = rtsp.New(rc, a.Hub)
}

// newSources builds the pulled sources of cfg: RTSP ones through the RTSP
// endpoint's client (with their rtsp_transport); on-demand ones stop
// after --relay-idle without viewers.
func (a *App) newSources(cfg config.Config) {
	srcs := make(map[streamname.Name]source.Source, len(cfg.Sources))
	for name, sc := range cfg.Sources {
		srcs[streamname.Name(name)] = source.Source{URL: sc.URL, Mode: sc.Mode, RTSPTransport: sc.RTSPTransport}
	}
	a.sources = source.New(source.Config{Sources: srcs, Idle: cfg.RelayIdle, Logger: a.log, NodeID: a.nodeID,
		RTSP: func(ctx context.Context, url, transport string, w source.PacketWriter) error {
			return rtsp.Pull(ctx, url, transport, w)
		}}, a.Hub)
}

// rtspRefusals is what the RTSP endpoint's limits refused, RTSP and
// RTSPS together.
func (a *App) rtspRefusals() connlimit.Refusals {
	n := a.rtsp.Refusals()
	return connlimit.Refusals{MaxConnections: n.MaxConnections, PerIP: n.PerIP, HandshakeTimeout: n.HandshakeTimeout}
}

// RTSPAddr is the RTSP listener's address, nil without one.
func (a *App) RTSPAddr() net.Addr {
	if a.rtsp == nil {
		return nil
	}
	return a.rtsp.Addr()
}

// RTSPSAddr is the RTSPS listener's address, nil without one.
func (a *App) RTSPSAddr() net.Addr {
	if a.rtsp == nil {
		return nil
	}
	return a.rtsp.TLSAddr()
}
