//go:build unix

package e2eutil

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RepoRoot is the repository's root, where go.mod, package.json,
// node_modules and deploy/ are: the first directory up from the working
// directory (a package's, under go test) whose go.mod is meshcast's.
func RepoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatalf("no meshcast go.mod in %s or above", wd)
		}
	}
}

// isModuleRoot reports whether the go.mod at path declares meshcast's
// module.
func isModuleRoot(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.TrimSpace(mod) == "github.com/meshcast/meshcast"
		}
	}
	return false
}
