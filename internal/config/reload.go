package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
)

// readSecretFiles sets each secret setting whose *File setting names a
// file to that file's content.
func readSecretFiles(cfg *Config) error {
	rv := reflect.ValueOf(cfg).Elem()
	t := rv.Type()
	for i := range t.NumField() {
		target := t.Field(i).Tag.Get("fileof")
		path := rv.Field(i).String()
		if target == "" || path == "" {
			continue
		}
		f := configFields.byYAML(target)
		dst := rv.Field(f.index)
		if !dst.IsZero() && !(dst.Kind() == reflect.Slice && dst.Len() == 0) {
			return fmt.Errorf("config: %s and %s are both set: set one", f.yaml, configFields[i].yaml)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: %s: %w", configFields[i].yaml, err)
		}
		text := strings.TrimRight(string(b), "\r\n")
		if dst.Type() == stringSliceType {
			var lines []string
			for line := range strings.SplitSeq(text, "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					lines = append(lines, line)
				}
			}
			dst.Set(reflect.ValueOf(lines))
			continue
		}
		dst.SetString(text)
	}
	return nil
}

// Changes lists, by flag name, the settings that differ between old and
// next: live ones, which a running node applies on reload (tagged
// reload:"live"), and the rest, which need a restart.
func Changes(old, next Config) (live, restart []string) {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(next)
	t := ov.Type()
	for _, f := range configFields {
		if reflect.DeepEqual(ov.Field(f.index).Interface(), nv.Field(f.index).Interface()) {
			continue
		}
		if t.Field(f.index).Tag.Get("reload") == "live" {
			live = append(live, "--"+f.flag)
		} else {
			restart = append(restart, "--"+f.flag)
		}
	}
	return live, restart
}

// Live returns cur with the settings a running node applies on reload
// taken from next, the others kept: the configuration in force after a
// reload.
func Live(cur, next Config) Config {
	cv, nv := reflect.ValueOf(&cur).Elem(), reflect.ValueOf(next)
	t := cv.Type()
	for _, f := range configFields {
		if t.Field(f.index).Tag.Get("reload") == "live" {
			cv.Field(f.index).Set(nv.Field(f.index))
		}
	}
	return cur
}
