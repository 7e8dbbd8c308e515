package hls

import "testing"

func TestMergeMultivariant(t *testing.T) {
	src := "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\n" +
		"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio2\",AUTOSELECT=YES,DEFAULT=YES,URI=\"audio2_stream.m3u8?sig=1\"\n\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=2000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio\"\n" +
		"video1_stream.m3u8?sig=1\n"
	low := "#EXTM3U\n#EXT-X-VERSION:9\n\n" +
		"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio2\",AUTOSELECT=YES,DEFAULT=YES,URI=\"audio2_stream.m3u8\"\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=600000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio\"\n" +
		"video1_stream.m3u8\n"
	got := string(MergeMultivariant([]Variant{{Name: "source", Playlist: []byte(src)}, {Name: "360p", Prefix: "../cam_360p/", Playlist: []byte(low)}}))
	want := "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\n" +
		"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-source\",NAME=\"audio2\",AUTOSELECT=YES,DEFAULT=YES,URI=\"audio2_stream.m3u8?sig=1\"\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=2000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio-source\"\n" +
		"video1_stream.m3u8?sig=1\n" +
		"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-360p\",NAME=\"audio2\",AUTOSELECT=YES,DEFAULT=YES,URI=\"../cam_360p/audio2_stream.m3u8\"\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=600000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio-360p\"\n" +
		"../cam_360p/video1_stream.m3u8\n"
	if got != want {
		t.Errorf("merged:\n%s\nwant:\n%s", got, want)
	}
}
