package media

// H.264 NAL unit types (H.264 Table 7-1) the packetizer looks at.
const (
	naluIDR = 5
	naluSPS = 7
	naluPPS = 8
	naluAUD = 9
)

// NALUPacketizer turns H.264 or HEVC access units whose parameter sets
// travel in band (MPEG-TS, RTP) into packets: a sequence header (avcC or
// hvcC) whenever the parameter sets change, then each frame in
// length-prefixed form without them. Frames before the first complete
// parameter sets are dropped: nothing can decode them. The zero value
// packetizes H.264.
type NALUPacketizer struct {
	// HEVC makes it packetize HEVC access units.
	HEVC bool

	cur  [3][]byte // SPS, PPS, VPS of the last sequence header
	seen [3][]byte // parameter sets seen since, possibly in different access units
}

// Indexes into the parameter set arrays.
const (
	psSPS = iota
	psPPS
	psVPS
)

// classify tells which parameter set n is (-1 for none) and whether it is
// a delimiter to drop or a picture a decoder can start at.
func (z *NALUPacketizer) classify(n []byte) (ps int, drop, key bool) {
	if z.HEVC {
		switch (n[0] >> 1) & 0x3f {
		case hevcNALUVPS:
			return psVPS, false, false
		case hevcNALUSPS:
			return psSPS, false, false
		case hevcNALUPPS:
			return psPPS, false, false
		case 35: // access unit delimiter
			return -1, true, false
		case 16, 17, 18, 19, 20, 21: // BLA, IDR, CRA
			return -1, false, true
		}
		return -1, false, false
	}
	switch n[0] & 0x1f {
	case naluSPS:
		return psSPS, false, false
	case naluPPS:
		return psPPS, false, false
	case naluAUD:
		return -1, true, false
	case naluIDR:
		return -1, false, true
	}
	return -1, false, false
}

// Packets appends the packets of one access unit, decoded at dts and shown
// at pts (milliseconds), to dst.
func (z *NALUPacketizer) Packets(dst []*Packet, dts, pts int64, au [][]byte) []*Packet {
	key := false
	nalus := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		ps, drop, k := z.classify(n)
		switch {
		case ps >= 0:
			// An H.264 SPS shorter than 4 bytes lacks the profile and
			// level an avcC is made of.
			if ps != psSPS || z.HEVC || len(n) >= 4 {
				z.seen[ps] = append(z.seen[ps][:0], n...)
			}
			continue
		case drop:
			continue
		}
		key = key || k
		nalus = append(nalus, n)
	}
	need := 2
	codec := CodecH264
	if z.HEVC {
		need, codec = 3, CodecH265
	}
	complete, changed := true, false
	for i := range need {
		complete = complete && z.seen[i] != nil
		changed = changed || string(z.seen[i]) != string(z.cur[i])
	}
	if complete && changed {
		for i := range need {
			z.cur[i] = append([]byte(nil), z.seen[i]...)
		}
		sps, pps := z.cur[psSPS], z.cur[psPPS]
		var cfg []byte
		if z.HEVC {
			cfg = NewHEVCConfig(z.cur[psVPS], sps, pps).Marshal()
		} else {
			cfg = (&AVCConfig{Profile: sps[1], Compat: sps[2], Level: sps[3], LengthSize: 4, SPS: [][]byte{sps}, PPS: [][]byte{pps}}).Marshal()
		}
		dst = append(dst, &Packet{Kind: KindVideo, Codec: codec, DTS: dts, SeqHeader: true, Payload: cfg})
	}
	if z.cur[psSPS] == nil || len(nalus) == 0 {
		return dst
	}
	return append(dst, &Packet{Kind: KindVideo, Codec: codec, DTS: dts, CTS: int32(pts - dts), Keyframe: key, Payload: NALUsToAVCC(nalus)})
}
