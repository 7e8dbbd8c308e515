package rtmp

// tsUnwrap extends a publisher's 32-bit RTMP timestamps to 64 bits. They
// wrap after 49.7 days, or within seconds for an encoder that starts near
// the top; each is taken as the nearest value to the one before it, so
// media keeps its order across the wrap and a timestamp slightly behind
// the previous one (audio and video interleaved) stays slightly behind.
type tsUnwrap struct {
	last uint32
	ext  int64
	ok   bool
}

func (u *tsUnwrap) unwrap(ts uint32) int64 {
	if !u.ok {
		u.last, u.ext, u.ok = ts, int64(ts), true
		return u.ext
	}
	u.ext += int64(int32(ts - u.last))
	u.last = ts
	return u.ext
}
