package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEFlags: the README's flag tables have a row for every flag of
// meshcast serve, and no row for a flag that does not exist.
func TestREADMEFlags(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	cell := regexp.MustCompile("`--([a-z0-9-]+)`")
	for line := range strings.SplitSeq(string(b), "\n") {
		first, ok := strings.CutPrefix(line, "| ")
		if !ok {
			continue
		}
		first, _, _ = strings.Cut(first, " | ")
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}
	known := map[string]bool{"config": true}
	for _, f := range configFields {
		if f.fileOnly {
			continue
		}
		known[f.flag] = true
		if !documented[f.flag] {
			t.Errorf("README.md has no table row for --%s", f.flag)
		}
	}
	for name := range documented {
		// Flags of the other commands (sign, bench) have tables too.
		if !known[name] && !otherCommandFlag(string(b), name) {
			t.Errorf("README.md documents --%s, which meshcast serve does not have", name)
		}
	}
}

// otherCommandFlag reports whether name is documented as a flag of
// another command (meshcast sign, meshcast bench): its table's section
// names the command.
func otherCommandFlag(readme, name string) bool {
	i := strings.Index(readme, "`--"+name+"`")
	j := strings.LastIndex(readme[:i], "\n## ")
	section := readme[j:i]
	return strings.Contains(section, "meshcast sign") || strings.Contains(section, "meshcast bench")
}
