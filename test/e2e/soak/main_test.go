//go:build unix

package soak

import (
	"testing"

	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

func TestMain(m *testing.M) { e2eutil.Main(m) }
