// Package buildinfo says which build of meshcast is running: the version
// the build stamped (make build and the container image pass
// -ldflags "-X github.com/meshcast/meshcast/internal/buildinfo.Version=..."
// from git describe), else the VCS revision Go recorded, else the module
// version, else "dev". "meshcast version", the start-up message, the API's
// node records and Socket.IO's hello all show it.
package buildinfo

import "runtime/debug"

// Version is stamped at build time; empty: read the build info.
var Version = ""

// String returns the running build's version.
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) string {
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		return "dev-" + rev[:min(len(rev), 12)] + dirty
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
