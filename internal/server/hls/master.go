package hls

import (
	"bufio"
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

// Variant is one stream of an adaptive-bitrate playlist: the multivariant
// playlist the HLS server makes for it, and the relative path from the
// merged playlist to its files.
type Variant struct {
	Name     string // tells its groups apart in the merged playlist
	Prefix   string // prefixed to its URIs: "" for the stream beside the playlist, "../live_720p/" for another
	Playlist []byte // its own multivariant playlist
}

var (
	groupAttr = regexp.MustCompile(`(GROUP-ID|AUDIO|VIDEO|SUBTITLES)="([^"]*)"`)
	uriAttr   = regexp.MustCompile(`URI="([^"]*)"`)
	versionRe = regexp.MustCompile(`^#EXT-X-VERSION:(\d+)$`)
)

// MergeMultivariant joins the multivariant playlists of several streams
// (a source and its renditions) into one, so a player picks among all of
// their variants. Each stream's media groups are renamed after it, so one
// stream's variants never pick another's audio, and every URI is made
// relative to the merged playlist.
func MergeMultivariant(vs []Variant) []byte {
	version := 3
	var body bytes.Buffer
	for _, v := range vs {
		sc := bufio.NewScanner(bytes.NewReader(v.Playlist))
		sc.Buffer(make([]byte, 0, 4096), 64<<10)
		var inf string // an EXT-X-STREAM-INF waiting for its URI
		for sc.Scan() {
			ln := strings.TrimSpace(sc.Text())
			switch {
			case ln == "" || ln == "#EXTM3U" || ln == "#EXT-X-INDEPENDENT-SEGMENTS":
			case versionRe.MatchString(ln):
				n, _ := strconv.Atoi(versionRe.FindStringSubmatch(ln)[1])
				version = max(version, n)
			case strings.HasPrefix(ln, "#EXT-X-MEDIA:"):
				body.WriteString(rewrite(ln, v) + "\n")
			case strings.HasPrefix(ln, "#EXT-X-STREAM-INF:"):
				inf = rewrite(ln, v)
			case ln[0] == '#':
				// Other tags of a multivariant playlist (session data, ...)
				// are the stream's own: left out.
			case inf != "":
				body.WriteString(inf + "\n" + v.Prefix + ln + "\n")
				inf = ""
			}
		}
	}
	var out bytes.Buffer
	out.WriteString("#EXTM3U\n#EXT-X-VERSION:" + strconv.Itoa(version) + "\n#EXT-X-INDEPENDENT-SEGMENTS\n\n")
	out.Write(body.Bytes())
	return out.Bytes()
}

// rewrite renames a tag's media groups after v and prefixes its URI.
func rewrite(ln string, v Variant) string {
	ln = groupAttr.ReplaceAllString(ln, `$1="$2-`+v.Name+`"`)
	return uriAttr.ReplaceAllString(ln, `URI="`+v.Prefix+`$1"`)
}
