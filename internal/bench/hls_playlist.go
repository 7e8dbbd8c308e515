package bench

import (
	"bytes"
	"strconv"
	"strings"
)

// HLS playlists are read by a small line scanner rather than a full parser:
// a player reloads its media playlist several times a second with LL-HLS,
// and the load generator plays thousands. It takes what gohlslib writes
// and what a static file server serves of copies of it: LF or CRLF line
// ends, attributes in any order, quoted values with commas, tags it does
// not know (ignored).

// hlsSegment is a media segment of a media playlist, or the unfinished
// segment whose parts follow the last finished one.
type hlsSegment struct {
	msn      int64
	dur      float64 // seconds (EXTINF); 0 while unfinished
	uri      []byte  // nil while unfinished
	mapURI   []byte  // the EXT-X-MAP in force; nil in a delta update that left it out
	gap      bool
	complete bool // listed with EXTINF and a URI
	part0    int  // index of its first part in mediaPlaylist.parts
	nParts   int
}

// hlsPart is an LL-HLS partial segment (EXT-X-PART).
type hlsPart struct {
	dur         float64
	uri         []byte
	independent bool
	gap         bool
}

// mediaPlaylist is a parsed media playlist. Its byte slices point into the
// body it was parsed from.
type mediaPlaylist struct {
	target       float64 // EXT-X-TARGETDURATION, seconds
	partTarget   float64 // EXT-X-PART-INF PART-TARGET, seconds; 0 without parts
	holdBack     float64 // EXT-X-SERVER-CONTROL HOLD-BACK, seconds
	partHoldBack float64 // PART-HOLD-BACK, seconds
	canBlock     bool    // CAN-BLOCK-RELOAD=YES
	canSkip      bool    // CAN-SKIP-UNTIL given: delta updates may be asked for
	endList      bool
	anyIndep     bool // some part says INDEPENDENT=YES
	segs         []hlsSegment
	parts        []hlsPart
	hint         []byte // EXT-X-PRELOAD-HINT TYPE=PART URI; nil without one
}

// parse reads body into pl, reusing pl's slices. It reports false when
// body is not a media playlist.
func (pl *mediaPlaylist) parse(body []byte) bool {
	*pl = mediaPlaylist{segs: pl.segs[:0], parts: pl.parts[:0]}
	if !bytes.HasPrefix(bytes.TrimLeft(body, "\ufeff \t\r\n"), []byte("#EXTM3U")) {
		return false
	}
	var (
		msn      int64
		dur      float64
		gap      bool
		mapURI   []byte
		part0    int
		isMedia  bool
		haveInf  bool
		seenSeq  bool
		skipping int64
	)
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if line[0] != '#' {
			if !haveInf {
				continue // a URI without EXTINF: not a media segment
			}
			pl.segs = append(pl.segs, hlsSegment{msn: msn, dur: dur, uri: line, mapURI: mapURI, gap: gap,
				complete: true, part0: part0, nParts: len(pl.parts) - part0})
			msn++
			dur, gap, haveInf, part0 = 0, false, false, len(pl.parts)
			continue
		}
		tag, val, _ := bytes.Cut(line, []byte(":"))
		switch string(tag) {
		case "#EXTINF":
			d, _, _ := bytes.Cut(val, []byte(","))
			dur, haveInf, isMedia = parseFloat(d), true, true
		case "#EXT-X-TARGETDURATION":
			pl.target, isMedia = parseFloat(val), true
		case "#EXT-X-MEDIA-SEQUENCE":
			if !seenSeq {
				msn, seenSeq = parseInt(val)+skipping, true
			}
		case "#EXT-X-SKIP":
			skipping = parseInt(attr(val, "SKIPPED-SEGMENTS"))
			msn += skipping
		case "#EXT-X-GAP":
			gap = true
		case "#EXT-X-MAP":
			mapURI = attr(val, "URI")
		case "#EXT-X-ENDLIST":
			pl.endList = true
		case "#EXT-X-SERVER-CONTROL":
			pl.canBlock = string(attr(val, "CAN-BLOCK-RELOAD")) == "YES"
			pl.canSkip = attr(val, "CAN-SKIP-UNTIL") != nil
			pl.holdBack = parseFloat(attr(val, "HOLD-BACK"))
			pl.partHoldBack = parseFloat(attr(val, "PART-HOLD-BACK"))
		case "#EXT-X-PART-INF":
			pl.partTarget = parseFloat(attr(val, "PART-TARGET"))
		case "#EXT-X-PART":
			var p hlsPart
			for it := (attrs{val}); ; {
				k, v, ok := it.next()
				if !ok {
					break
				}
				switch string(k) {
				case "DURATION":
					p.dur = parseFloat(v)
				case "URI":
					p.uri = v
				case "INDEPENDENT":
					p.independent = string(v) == "YES"
				case "GAP":
					p.gap = string(v) == "YES"
				}
			}
			if p.uri != nil {
				pl.parts = append(pl.parts, p)
				pl.anyIndep = pl.anyIndep || p.independent
			}
		case "#EXT-X-PRELOAD-HINT":
			if string(attr(val, "TYPE")) == "PART" {
				pl.hint = attr(val, "URI")
			}
		}
	}
	if n := len(pl.parts) - part0; n > 0 {
		pl.segs = append(pl.segs, hlsSegment{msn: msn, mapURI: mapURI, part0: part0, nParts: n})
	}
	return isMedia
}

// first and last return the first and last listed segments' numbers; the
// playlist lists none when last < first.
func (pl *mediaPlaylist) first() int64 {
	if len(pl.segs) == 0 {
		return 0
	}
	return pl.segs[0].msn
}

func (pl *mediaPlaylist) last() int64 {
	if len(pl.segs) == 0 {
		return -1
	}
	return pl.segs[len(pl.segs)-1].msn
}

// seg returns segment msn, or nil when the playlist does not list it.
func (pl *mediaPlaylist) seg(msn int64) *hlsSegment {
	if len(pl.segs) == 0 {
		return nil
	}
	i := msn - pl.segs[0].msn
	if i < 0 || i >= int64(len(pl.segs)) {
		return nil
	}
	return &pl.segs[i]
}

// lastComplete returns the newest finished segment's number, or -1.
func (pl *mediaPlaylist) lastComplete() int64 {
	for i := len(pl.segs) - 1; i >= 0; i-- {
		if pl.segs[i].complete {
			return pl.segs[i].msn
		}
	}
	return -1
}

// after returns the position just after the last listed part: where the
// preload hint and the next blocking reload point.
func (pl *mediaPlaylist) after() hlsPos {
	if len(pl.segs) == 0 {
		return hlsPos{-1, 0}
	}
	s := pl.segs[len(pl.segs)-1]
	if s.complete {
		return hlsPos{s.msn + 1, 0}
	}
	return hlsPos{s.msn, s.nParts}
}

// hlsPos is a position in a media playlist: part part of segment msn.
type hlsPos struct {
	msn  int64
	part int
}

// attr returns the value of attribute name in an attribute list, unquoted,
// or nil.
func attr(list []byte, name string) []byte {
	for it := (attrs{list}); ; {
		k, v, ok := it.next()
		if !ok {
			return nil
		}
		if string(k) == name {
			return v
		}
	}
}

// attrs iterates over an attribute list: NAME=VALUE,NAME="VALUE",...
type attrs struct{ list []byte }

// next returns the next attribute, its value unquoted (never nil).
func (a *attrs) next() (key, val []byte, ok bool) {
	list := a.list
	eq := bytes.IndexByte(list, '=')
	if eq < 0 {
		a.list = nil
		return nil, nil, false
	}
	key = bytes.TrimSpace(list[:eq])
	list = list[eq+1:]
	if len(list) > 0 && list[0] == '"' {
		end := bytes.IndexByte(list[1:], '"')
		if end < 0 {
			val, list = list[1:], nil
		} else {
			val, list = list[1:1+end], list[2+end:]
		}
		if i := bytes.IndexByte(list, ','); i >= 0 {
			list = list[i+1:]
		} else {
			list = nil
		}
	} else if i := bytes.IndexByte(list, ','); i >= 0 {
		val, list = bytes.TrimSpace(list[:i]), list[i+1:]
	} else {
		val, list = bytes.TrimSpace(list), nil
	}
	if val == nil {
		val = []byte{} // present, empty
	}
	a.list = list
	return key, val, true
}

// parseFloat reads a decimal-floating-point value: digits with an optional
// fraction, without allocating; other forms go to strconv. Invalid or
// negative values are 0.
func parseFloat(b []byte) float64 {
	b = bytes.TrimSpace(b)
	var whole, frac, scale float64 = 0, 0, 1
	dot, digits := false, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9' && !dot:
			whole = whole*10 + float64(c-'0')
			digits++
		case c >= '0' && c <= '9':
			frac = frac*10 + float64(c-'0')
			scale *= 10
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			f, err := strconv.ParseFloat(string(b), 64)
			if err != nil || f < 0 {
				return 0
			}
			return f
		}
	}
	if digits == 0 {
		return 0
	}
	return whole + frac/scale
}

// parseInt reads a decimal integer; invalid or negative values are 0.
func parseInt(b []byte) int64 {
	b = bytes.TrimSpace(b)
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// multivariant is what a player takes from a multivariant playlist: the
// first variant's media playlist and the audio rendition it plays with.
type multivariant struct {
	video string // the first variant's URI
	audio string // its audio rendition's URI; "" when the audio is in the variant
}

// parseMultivariant reads a multivariant playlist. It reports false when
// body is a media playlist or lists no variant.
func parseMultivariant(body []byte) (multivariant, bool) {
	var mv multivariant
	type rendition struct {
		group, uri string
		def        bool
	}
	var audios []rendition
	var group string
	inf := false
	found := false
	for _, raw := range strings.Split(string(body), "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXTINF:"), strings.HasPrefix(line, "#EXT-X-TARGETDURATION:"):
			return mv, false
		case strings.HasPrefix(line, "#EXT-X-MEDIA:"):
			val := []byte(line[len("#EXT-X-MEDIA:"):])
			if string(attr(val, "TYPE")) == "AUDIO" {
				audios = append(audios, rendition{group: string(attr(val, "GROUP-ID")), uri: string(attr(val, "URI")),
					def: string(attr(val, "DEFAULT")) == "YES"})
			}
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF:"):
			if !found {
				inf = true
				group = string(attr([]byte(line[len("#EXT-X-STREAM-INF:"):]), "AUDIO"))
			}
		case line[0] == '#':
		case inf:
			mv.video, inf, found = line, false, true
		}
	}
	if !found {
		return mv, false
	}
	if group != "" {
		// The group's default rendition, else its first.
		pick := -1
		for i, r := range audios {
			if r.group == group && (pick < 0 || r.def && !audios[pick].def) {
				pick = i
			}
		}
		if pick >= 0 {
			mv.audio = audios[pick].uri
		}
	}
	return mv, true
}
