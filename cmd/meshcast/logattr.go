package main

import (
	"log/slog"
	"net"
)

// logAttr writes network addresses as their strings, "127.0.0.1:1935",
// where the JSON handler would otherwise write a *net.TCPAddr's fields
// as an object.
func logAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindAny {
		if addr, ok := a.Value.Any().(net.Addr); ok && addr != nil {
			a.Value = slog.StringValue(addr.String())
		}
	}
	return a
}
