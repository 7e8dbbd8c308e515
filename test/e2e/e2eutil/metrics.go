//go:build unix

package e2eutil

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// MetricsScrape is one /metrics answer: its text, its samples by series
// (`name{label="value",...}`, labels sorted), its families' types and
// whether each has HELP.
type MetricsScrape struct {
	Text    string             // the exposition as served
	Samples map[string]float64 // by series
	Types   map[string]string  // by family
	Help    map[string]bool    // by family
}

// Has reports whether the scrape holds name: a family, or a histogram's
// _bucket, _sum or _count series.
func (sc MetricsScrape) Has(name string) bool {
	if _, ok := sc.Types[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if fam, ok := strings.CutSuffix(name, suffix); ok {
			if typ := sc.Types[fam]; typ == "histogram" || typ == "summary" && suffix != "_bucket" {
				return true
			}
		}
	}
	return false
}

// ScrapeMetrics fetches and parses the /metrics of the node at httpURL.
func ScrapeMetrics(t *testing.T, httpURL string) MetricsScrape {
	t.Helper()
	code, body := HTTPGet(t, httpURL+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	sc, err := ParseMetrics(string(body))
	if err != nil {
		t.Fatalf("/metrics: %v\n%s", err, body)
	}
	return sc
}

// ParseMetrics reads Prometheus's text exposition format.
func ParseMetrics(text string) (MetricsScrape, error) {
	sc := MetricsScrape{Text: text, Samples: map[string]float64{}, Types: map[string]string{}, Help: map[string]bool{}}
	for i, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			f := strings.Fields(rest)
			switch {
			case len(f) >= 3 && f[0] == "TYPE":
				sc.Types[f[1]] = f[2]
			case len(f) >= 3 && f[0] == "HELP":
				sc.Help[f[1]] = true
			}
			continue
		}
		series, value, err := parseSample(line)
		if err != nil {
			return sc, fmt.Errorf("line %d %q: %v", i+1, line, err)
		}
		sc.Samples[series] = value
	}
	return sc, nil
}

// parseSample splits `name{a="x",b="y"} value [timestamp]`.
func parseSample(line string) (string, float64, error) {
	end := strings.IndexAny(line, "{ ")
	if end <= 0 {
		return "", 0, fmt.Errorf("no metric name")
	}
	name, rest := line[:end], line[end:]
	var labels []string
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				return "", 0, fmt.Errorf("bad label")
			}
			key := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				switch c := rest[j]; {
				case c == '\\' && j+1 < len(rest):
					j++
					if rest[j] == 'n' {
						val.WriteByte('\n')
					} else {
						val.WriteByte(rest[j]) // \\ and \"
					}
				case c == '"':
					rest, closed = rest[j+1:], true
				default:
					val.WriteByte(c)
				}
				if closed {
					break
				}
			}
			if !closed {
				return "", 0, fmt.Errorf("unterminated label value")
			}
			labels = append(labels, fmt.Sprintf("%s=%q", key, val.String()))
		}
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return "", 0, fmt.Errorf("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", 0, err
	}
	if len(labels) > 0 {
		sort.Strings(labels)
		name += "{" + strings.Join(labels, ",") + "}"
	}
	return name, v, nil
}
