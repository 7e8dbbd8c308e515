package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// field describes one setting, derived from a struct field and its tags.
type field struct {
	index  int    // position in the struct
	goName string // Go field name
	yaml   string // YAML key, from the yaml tag
	flag   string // flag name without dashes: yaml with "_" → "-"
	env    string // environment variable: EnvPrefix + upper-cased yaml
	usage  string // help text, from the usage tag
	secret bool   // secret:"true": hidden by Redacted
	kind   string // value placeholder shown by Usage
	typ    reflect.Type

	// fileOnly marks a map setting: set in the YAML file only, as flags
	// and environment variables have no syntax for it.
	fileOnly bool
}

// fieldList is the ordered settings of a struct type.
type fieldList []field

var (
	durationType    = reflect.TypeFor[time.Duration]()
	stringSliceType = reflect.TypeFor[[]string]()
)

// configFields are the settings of Config.
var configFields = mustFields(reflect.TypeFor[Config]())

// mustFields derives the settings of struct type t. It panics on a field
// without a yaml tag or of an unsupported type, so such a mistake fails at
// start-up rather than silently leaving a setting unreachable.
func mustFields(t reflect.Type) fieldList {
	var fl fieldList
	seen := make(map[string]bool)
	for i := range t.NumField() {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			panic(fmt.Sprintf("config: field %s has no yaml key", sf.Name))
		}
		if seen[key] {
			panic(fmt.Sprintf("config: yaml key %q used twice", key))
		}
		seen[key] = true
		f := field{
			index:  i,
			goName: sf.Name,
			yaml:   key,
			flag:   strings.ReplaceAll(key, "_", "-"),
			env:    EnvPrefix + strings.ToUpper(key),
			usage:  sf.Tag.Get("usage"),
			secret: sf.Tag.Get("secret") == "true",
			typ:    sf.Type,
		}
		switch {
		case sf.Type == durationType:
			f.kind = "duration"
		case sf.Type == stringSliceType:
			f.kind = "list"
		case sf.Type.Kind() == reflect.String, sf.Type.Kind() == reflect.Int, sf.Type.Kind() == reflect.Bool:
			f.kind = sf.Type.Kind().String()
		case sf.Type.Kind() == reflect.Map && sf.Type.Key().Kind() == reflect.String:
			f.kind, f.fileOnly = "map", true
		default:
			panic(fmt.Sprintf("config: field %s has unsupported type %s", sf.Name, sf.Type))
		}
		fl = append(fl, f)
	}
	return fl
}

// byGo returns the setting for the Go field name; it panics if there is none.
func (fl fieldList) byGo(name string) field {
	for _, f := range fl {
		if f.goName == name {
			return f
		}
	}
	panic("config: no field " + name)
}

// byYAML returns the setting with YAML key key.
func (fl fieldList) byYAML(key string) field {
	for _, f := range fl {
		if f.yaml == key {
			return f
		}
	}
	panic("config: no setting " + key)
}

// parse converts the flag or environment form s to a value of f's type.
func (f field) parse(s string) (reflect.Value, error) {
	v := reflect.New(f.typ).Elem()
	switch {
	case f.typ == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return v, fmt.Errorf("invalid duration %q (use Go syntax such as 5s or 250ms)", s)
		}
		v.SetInt(int64(d))
	case f.typ == stringSliceType:
		list := []string{}
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list))
	case f.typ.Kind() == reflect.String:
		v.SetString(s)
	case f.typ.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return v, fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(int64(n))
	case f.typ.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return v, fmt.Errorf("invalid boolean %q", s)
		}
		v.SetBool(b)
	}
	return v, nil
}

// format renders v, a value of f's type, in flag and environment form.
func (f field) format(v reflect.Value) string {
	switch {
	case f.typ == durationType:
		return time.Duration(v.Int()).String()
	case f.typ == stringSliceType:
		return strings.Join(v.Interface().([]string), ",")
	default:
		return fmt.Sprint(v.Interface())
	}
}

// quoted is format with strings and lists quoted, so that empty values show.
func (f field) quoted(v reflect.Value) string {
	s := f.format(v)
	if f.typ == stringSliceType || f.typ.Kind() == reflect.String {
		return strconv.Quote(s)
	}
	return s
}

// redacted returns the settings of struct value sv keyed by YAML key, with
// durations in Go syntax and secrets replaced by "REDACTED".
func (fl fieldList) redacted(sv reflect.Value) map[string]any {
	m := make(map[string]any, len(fl))
	for _, f := range fl {
		v := sv.Field(f.index)
		switch {
		case f.secret:
			m[f.yaml] = "REDACTED"
		case f.typ == durationType:
			m[f.yaml] = f.format(v)
		case f.typ == stringSliceType:
			m[f.yaml] = slices.Clone(v.Interface().([]string))
		case f.fileOnly:
			// A copy, so the map is not shared with the configuration.
			cp := reflect.MakeMapWithSize(f.typ, v.Len())
			for it := v.MapRange(); it.Next(); {
				cp.SetMapIndex(it.Key(), it.Value())
			}
			m[f.yaml] = cp.Interface()
		default:
			m[f.yaml] = v.Interface()
		}
	}
	return m
}

// pending is a flag value parsed but not yet applied.
type pending struct {
	f field
	v reflect.Value
}

// flagValue is the flag.Value of one setting. Set parses the argument and
// records it in out, to be applied after the file and environment.
type flagValue struct {
	f   field
	out *[]pending
	cur string
}

// String implements flag.Value.
func (fv *flagValue) String() string {
	if fv == nil {
		return ""
	}
	return fv.cur
}

// Set implements flag.Value.
func (fv *flagValue) Set(s string) error {
	v, err := fv.f.parse(s)
	if err != nil {
		return err
	}
	fv.cur = s
	*fv.out = append(*fv.out, pending{f: fv.f, v: v})
	return nil
}

// IsBoolFlag lets a boolean setting be given as a bare --flag.
func (fv *flagValue) IsBoolFlag() bool {
	return fv.f.typ.Kind() == reflect.Bool
}
